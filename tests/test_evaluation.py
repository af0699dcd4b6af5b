"""Sampling settings of the evaluation: overrides, sweeps, the tuned CFG, errors."""

from __future__ import annotations

import pytest

from scalewise.core.config import ConfigError
from scalewise.evaluation.settings import SamplingSetting, SweepConfig, best_cfg, setting_from, sweep_settings


def test_overrides_change_only_what_they_name():
    base = setting_from(SamplingSetting(), {"cfg": 2.0, "top_k": 5}, "evaluate.sampling")
    masked = setting_from(base, {"resample": {"kind": "masked", "iters": 3}}, "evaluate.settings.masked")
    assert (masked.cfg, masked.top_k, masked.resample_kind, masked.resample_iters) == (2.0, 5, "masked", 3)
    assert masked.resample_threshold == base.resample_threshold and masked.resample().kind == "masked"


@pytest.mark.parametrize("overrides,message", [
    ({"cfgg": 1.0}, r"unknown sampling option\(s\) \['cfgg'\]"),
    ({"resample": {"kind": "magic"}}, "resample.kind='magic' is unknown"),
    ({"resample": {"iter": 2}}, r"unknown key\(s\) \['iter'\]"),
    ({"top_p": 1.5}, "top_p must lie in"),
    ({"cfg": -1}, "cfg must be >= 0"),
    ({"cfg_schedule": "cosine"}, "cfg_schedule='cosine' is unknown"),
])
def test_bad_settings_name_the_option(overrides, message):
    with pytest.raises(ConfigError, match=message):
        setting_from(SamplingSetting(), overrides, "evaluate.settings.x")


def test_sweeps_cover_the_grid_with_stable_names():
    base = SamplingSetting(cfg=1.5)
    sweeps = SweepConfig(cfg=[0, 2.5], cfg_resample="masked", masked_threshold=[0.05, 0.1], masked_iters=[1, 4],
                         top_k=[10], top_p=[0.9])
    got = sweep_settings(base, sweeps)
    assert list(got) == ["cfg0", "cfg2.5", "masked_t0.05_n1", "masked_t0.05_n4", "masked_t0.1_n1",
                         "masked_t0.1_n4", "top_k10", "top_p0.9"]
    assert got["cfg2.5"].cfg == 2.5 and got["cfg2.5"].resample_kind == "masked"
    assert got["masked_t0.1_n4"].resample_threshold == 0.1 and got["masked_t0.1_n4"].resample_iters == 4
    assert got["top_k10"].top_k == 10 and got["top_k10"].cfg == 1.5 and got["top_p0.9"].top_p == 0.9


def test_the_cfg_sweep_runs_on_cfg_models_and_the_other_sweeps_on_models():
    sweeps = SweepConfig(models=["srdd"], cfg=[0, 10], cfg_models=["var", "srdd"], masked_threshold=[0.1],
                         masked_iters=[1], top_k=[5])
    base = SamplingSetting()
    assert list(sweep_settings(base, sweeps, "var")) == ["cfg0", "cfg10"]
    assert list(sweep_settings(base, sweeps, "srdd")) == ["cfg0", "cfg10", "masked_t0.1_n1", "top_k5"]
    assert sweep_settings(base, sweeps, "srdd_distilled") == {}
    assert list(sweep_settings(base, SweepConfig(models=["srdd"], cfg=[2]), "var")) == []  # cfg_models: models


def test_best_cfg_is_the_lowest_fid_point_of_the_cfg_sweep():
    results = {"default": {"fid": 1.0}, "cfg0": {"fid": 9.0}, "cfg1.5": {"fid": 4.0}, "cfg3": {"fid": 5.0}}
    assert best_cfg(results) == 1.5
    assert best_cfg({"default": {"fid": 1.0}}) is None


def test_heads_settings_name_their_mode_and_need_masked_resampling_for_the_policy():
    from scalewise.evaluation.plan import HeadsEvaluateConfig

    base = SamplingSetting()
    plan = HeadsEvaluateConfig(settings={"both": {"infer_mode": "both", "resample": {"kind": "masked", "iters": 3}},
                                         "guidance": {"infer_mode": "guidance"}}).plan(base)
    assert [(n, m, s.resample_kind, s.resample_iters) for n, m, s in plan] == [
        ("both", "both", "masked", 3), ("guidance", "guidance", "none", 2)]
    with pytest.raises(ConfigError, match=r"evaluate_heads.settings.x.infer_mode must be one of .*'fancy'"):
        HeadsEvaluateConfig(settings={"x": {"infer_mode": "fancy"}}).plan(base)
    with pytest.raises(ConfigError, match="infer_mode 'policy' re-masks inside masked resampling"):
        HeadsEvaluateConfig(settings={"x": {"infer_mode": "policy"}}).plan(base)
    with pytest.raises(ConfigError, match="unknown sampling option"):
        HeadsEvaluateConfig(settings={"x": {"infer_mode": "guidance", "tau": 2}}).plan(base)
