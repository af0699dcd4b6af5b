"""Training loop of the tokenizer: exact resume, NaN handling, schedule, bad config."""

from __future__ import annotations

import pytest
import torch

from killrun import assert_same_run, killed_then_resumed
from scalewise.core.config import ConfigError, from_dict
from scalewise.models.tokenizer import TokenizerConfig
from scalewise.training.resume import run_key
from scalewise.training.schedule import lr_at
from scalewise.training.tokenizer import TrainTokenizerConfig, train_tokenizer
from swtest import TINY_MODEL, digits_u8


def tiny_cfg(**kw) -> TrainTokenizerConfig:
    base = dict(model=TokenizerConfig(**TINY_MODEL), steps=12, batch_size=8, lr=2e-3, warmup_steps=2,
                dead_code_every=5, dead_code_min_usage=0.5, log_every=1, ckpt_every=4, seed=3)
    base.update(kw)
    return TrainTokenizerConfig(**base)


def test_killed_run_resumes_from_its_last_checkpoint_exactly(tmp_path):
    images, _ = digits_u8(16)
    images = images[:200]
    full = train_tokenizer(tiny_cfg(), images, "h", tmp_path / "a", progress=False)
    resumed = killed_then_resumed(
        lambda on_log: train_tokenizer(tiny_cfg(), images, "h", tmp_path / "b", on_log=on_log, progress=False), 6)
    assert (resumed.resumed_from, resumed.steps_run) == (4, 8)
    assert_same_run(full, resumed)
    assert [r["step"] for r in resumed.history] == list(range(1, 13))


def test_changed_config_or_data_starts_fresh(tmp_path):
    images, _ = digits_u8(16)
    train_tokenizer(tiny_cfg(steps=4), images[:100], "h", tmp_path, progress=False)
    assert train_tokenizer(tiny_cfg(steps=4), images[:100], "h", tmp_path, progress=False).resumed_from == 4
    assert train_tokenizer(tiny_cfg(steps=4, lr=1e-3), images[:100], "h", tmp_path, progress=False).resumed_from == 0
    key = tiny_cfg().key_settings()
    assert run_key(key, "h") != run_key(key, "other-data")


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    images, _ = digits_u8(16)
    train_tokenizer(tiny_cfg(steps=4), images[:100], "h", tmp_path, progress=False)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(FloatingPointError, match="loss is (nan|inf).*last good checkpoint"):
        train_tokenizer(tiny_cfg(steps=40, lr=1e12, warmup_steps=1), images[:100], "h", tmp_path, progress=False)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_training_lowers_the_loss(tmp_path):
    images, _ = digits_u8(16)
    res = train_tokenizer(tiny_cfg(steps=60, log_every=10, ckpt_every=100), images, "h", tmp_path, progress=False)
    assert res.history[-1]["recon_mse"] < 0.5 * res.history[0]["recon_mse"]


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 1.0, 10, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(b <= a for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] >= 0.1


def test_bad_params_name_the_parameter():
    with pytest.raises(ConfigError, match="unknown parameter.*'stepz'"):
        from_dict(TrainTokenizerConfig, {"stepz": 3}, "params.yaml: train_tokenizer")
    with pytest.raises(ConfigError, match="train_tokenizer.model.*downsample"):
        from_dict(TrainTokenizerConfig, {"model": {"downsample": 8}}, "params.yaml: train_tokenizer")
    with pytest.raises(ConfigError, match="train_tokenizer.batch_size must be >= 1, got 0"):
        TrainTokenizerConfig(batch_size=0)
    with pytest.raises(ConfigError, match="train_tokenizer.steps must be an integer, got 2.5"):
        TrainTokenizerConfig(steps=2.5)
    with pytest.raises(ConfigError, match="image_size=30 is not divisible"):
        train_tokenizer(tiny_cfg(), torch.zeros(4, 1, 30, 30, dtype=torch.uint8), "h", "unused", progress=False)
