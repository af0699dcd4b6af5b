"""T9 / T9b over training seeds (pure tables) and the ``paper_table`` seed settings."""

from __future__ import annotations

import math

import pytest

from scalewise.core.config import ConfigError
from scalewise.evaluation.seeds import mean_std, pm, t9_seeds, t9b_claims, verdict
from scalewise.evaluation.tables import MissingResult
from scalewise.project.seeds import seed_settings


def _r(fid: float, recall: float = 0.5, ips: float = 100.0, **extra) -> dict:
    return {"fid": fid, "isc": 5.0, "precision": 0.7, "recall": recall, "images_per_s": ips, **extra}


def _seed(var: float, srdd: float, masked: float, both: float, student: float) -> dict:
    return {
        "metrics/evaluate/var.json": {"default": _r(var)},
        "metrics/evaluate/srdd.json": {"default": _r(srdd, 0.6), "masked": _r(masked, 0.4, 50.0)},
        "metrics/evaluate_heads.json": {"policy": _r(masked + 0.01), "guidance": _r(srdd + 1.0, 0.7),
                                        "both": _r(both, 0.45, 45.0)},
        "metrics/distill_frontier.json": {"teacher": _r(srdd), "students": {
            "drop1": _r(student, drop=[5], speedup=1.2)}},
    }


PER_SEED = {0: _seed(2.0, 1.5, 1.2, 1.25, 1.6), 1: _seed(2.2, 1.4, 1.1, 1.30, 1.3), 2: _seed(2.1, 1.6, 1.3, 1.20, 1.8)}


def test_t9_gives_mean_and_sample_std_of_every_row_over_the_seeds():
    t = t9_seeds(PER_SEED)
    rows = {r[1]: dict(zip(t.columns, r)) for r in t.rows}
    assert rows["VAR"]["FID"] == "2.100 ± 0.100" and rows["VAR"]["FID per seed"] == "2.000 / 2.200 / 2.100"
    assert rows["SRDD + fixed masked resampling"]["img/s"] == "50.0 ± 0.0"
    assert rows["student drop1"]["speed-up"] == "1.20 ± 0.00"
    assert rows["SRDD"]["speed-up"] == ""  # only students have one
    assert "T9" == t.key and "3 training seeds" in t.title


def test_t9b_claims_hold_only_beyond_their_paired_spread_with_every_seed_agreeing():
    t = t9b_claims(PER_SEED)
    by = {(r[0], r[1]): dict(zip(t.columns, r)) for r in t.rows}
    srdd_var = by[("SRDD vs VAR (T1)", "fid")]  # -0.5, -0.8, -0.5: consistent and far beyond the spread
    assert srdd_var["a - b (mean)"] == pytest.approx(-0.6) and srdd_var["verdict"] == "a better"
    assert srdd_var["seeds agreeing"] == "3/3" and srdd_var["per seed"] == "-0.500 / -0.800 / -0.500"
    both = by[("policy + tau / CFG vs fixed masked resampling (T7)", "fid")]  # +0.05, +0.2, -0.1: mixed signs
    assert both["verdict"] == "within spread"
    recall = by[("fixed masked resampling vs baseline (T7)", "recall")]  # -0.2 on every seed: b better
    assert recall["verdict"] == "b better"
    student = by[("student drop1 vs teacher (T8)", "fid")]  # +0.1, -0.1, +0.2
    assert student["verdict"] == "within spread"


def test_verdict_needs_the_difference_beyond_the_spread_and_a_second_seed():
    assert verdict(-1.0, 0.5, 3, 3, -1) == "a better"
    assert verdict(-1.0, 0.5, 3, 3, +1) == "b better"
    assert verdict(-0.4, 0.5, 3, 3, -1) == "within spread"
    assert verdict(-1.0, 0.5, 2, 3, -1) == "within spread"  # one seed disagrees
    assert verdict(-1.0, math.nan, 1, 1, -1) == "one seed"
    assert mean_std([1.0]) == (1.0, pytest.approx(math.nan, nan_ok=True)) and pm([1.0]) == "1.000"


def test_a_missing_seed_result_is_named():
    broken = {0: PER_SEED[0], 1: {k: v for k, v in PER_SEED[1].items() if k != "metrics/evaluate_heads.json"}}
    with pytest.raises(MissingResult, match="seed 1: no metrics/evaluate_heads.json"):
        t9_seeds(broken)
    other = {0: PER_SEED[0], 1: _seed(2.0, 1.5, 1.2, 1.25, 1.6)}
    other[1]["metrics/distill_frontier.json"]["students"] = {"drop2": _r(1.0, drop=[3, 5], speedup=1.3)}
    with pytest.raises(MissingResult, match="same distill_frontier.students"):
        t9_seeds(other)


PARAMS = {"train": {"common": {"seed": 0}}, "distill": {"seed": 0}, "train_heads": {"seed": 0}}


def test_seed_settings_name_one_experiment_per_extra_seed():
    s = seed_settings({**PARAMS, "paper_table": {"seeds": [0, 3], "seed_overrides": ["evaluate.models=[var]"]}})
    assert s.experiments() == {"seed3": ["train.common.seed=3", "distill.seed=3", "train_heads.seed=3",
                                         "evaluate.models=[var]"]}
    assert seed_settings({**PARAMS, "paper_table": {"seeds": []}}) is None
    assert seed_settings(PARAMS) is None


@pytest.mark.parametrize("sec, match", [
    ({"seeds": [1, 2]}, r"train.common.seed is 0, but paper_table.seeds\[0\] = 1"),
    ({"seeds": [0, 0]}, "repeats a seed"),
    ({"seeds": [0, -1]}, "integers >= 0"),
    ({"seeds": "0,1"}, "must be a list of seeds"),
    ({"seeds": [0, 1], "seed_params": ["train.nope"]}, "names 'train.nope'"),
    ({"seeds": [0, 1], "seed_params": []}, "seed_params is empty"),
    ({"seeds": [0, 1], "seed_overrides": ["evaluate.models"]}, "expected 'key=value'"),
])
def test_bad_seed_settings_are_clear_errors(sec, match):
    with pytest.raises(ConfigError, match=match):
        seed_settings({**PARAMS, "paper_table": sec})
