"""Restoration cost, timed side by side: methods interleaved, medians, ratios to the prior per variant."""

from __future__ import annotations

import pytest
import torch

from scalewise.bench.restore import time_methods
from scalewise.bench.restore_cost import RestoreCostConfig, restore_cost
from scalewise.core.config import ConfigError
from scalewise.core.machine import CPU_FLAGS, machine_info
from scalewise.models.transformer import ScaleTransformer, TransformerConfig
from scalewise.posterior.guidance_config import PosteriorGuidanceConfig
from scalewise.posterior.measurements import build_operator


class _RecordingSampler:
    """A sampler that records which method each call ran (guided, clamp) and its seed."""

    def __init__(self) -> None:
        self.model = torch.nn.Linear(1, 1)
        self.calls: list[tuple[bool, bool, int]] = []

    def sample(self, y, guided=True, clamp=False, seed=0):
        self.calls.append((guided, clamp, seed))


def test_methods_are_interleaved_so_load_changes_hit_them_alike():
    s = _RecordingSampler()
    sec = time_methods(s, torch.zeros(4, 1), ["prior", "clamp", "guided"], runs=2, warmup=1, seed=5)
    prior, clamp, guided = (False, False), (False, True), (True, False)
    assert [c[:2] for c in s.calls] == [prior, clamp, guided] * 3  # warm-up, then two timed rounds
    assert [c[2] for c in s.calls] == [5, 5, 5, 6, 6, 6, 7, 7, 7]
    assert set(sec) == {"prior", "clamp", "guided"} and all(v >= 0 for v in sec.values())
    with pytest.raises(ValueError, match="runs must be >= 1"):
        time_methods(s, torch.zeros(4, 1), ["prior"], runs=0)
    with pytest.raises(ValueError, match="unknown sampling method 'guided_mean'"):
        time_methods(s, torch.zeros(4, 1), ["prior", "guided_mean"])


def test_restore_cost_times_each_variant_against_the_plain_prior(trained_tokenizer):
    tok, test_u8 = trained_tokenizer
    tok.eval()
    torch.manual_seed(0)
    cfg = TransformerConfig(depth=1, width=32, heads=2, vocab_size=tok.cfg.vocab_size, cvae=tok.cfg.cvae,
                            patch_nums=list(tok.patch_nums), num_classes=10, mask_kind="markov")
    model = ScaleTransformer(cfg).eval()
    size = tok.cfg.downsample * tok.patch_nums[-1]
    op = build_operator("superres", {"factor": 2}, size, tok.cfg.in_channels)
    y = op(torch.rand(5, tok.cfg.in_channels, size, size) * 2 - 1)
    config = RestoreCostConfig(variants={"default": {}, "fewer": {"grad_steps": 1}}, runs=1, warmup=0, batch_size=3)
    out = restore_cost(model, tok, op, y, {"preset": "default", "guide_from_scale": 1}, config, 0.05)
    assert list(out) == ["default", "fewer"]
    assert out["default"]["batch_size"] == 3 and out["default"]["grad_steps"] == PosteriorGuidanceConfig().grad_steps and out["fewer"]["grad_steps"] == 1
    for rec in out.values():
        assert set(rec["sec_per_image"]) == {"prior", "clamp", "guided"} and rec["ratio_to_prior"]["prior"] == 1.0
        assert rec["ratio_to_prior"]["guided"] == pytest.approx(rec["sec_per_image"]["guided"] / rec["sec_per_image"]["prior"])
    # the default's gradient steps on each guided scale cost more than one (the same prior, the same images)
    assert out["default"]["sec_per_image"]["guided"] > out["fewer"]["sec_per_image"]["guided"]
    bad = RestoreCostConfig(variants={"broken": {"grad_steps": -1}}, runs=1, warmup=0, batch_size=3)
    with pytest.raises(ConfigError, match=r"reconstruct\.guidance \+ broken.*grad_steps must be >= 0"):
        restore_cost(model, tok, op, y, {}, bad, 0.05)


def test_restore_cost_settings_are_checked():
    with pytest.raises(ValueError, match="methods must include prior"):
        RestoreCostConfig(methods=["guided"])
    with pytest.raises(ValueError, match="unknown sampling method 'guided_mean'"):
        RestoreCostConfig(methods=["prior", "guided_mean"])
    with pytest.raises(ValueError, match="variants must name at least one"):
        RestoreCostConfig(variants={})


def test_machine_info_names_the_cpu_and_only_known_flags():
    info = machine_info("cpu")
    assert info["device"] == "cpu" and info["threads"] == torch.get_num_threads() and info["cpu"]
    assert set(info["cpu_flags"]) <= set(CPU_FLAGS)
