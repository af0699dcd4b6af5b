"""The resume rules of every trainer: what the run key holds, continuing with more steps, a
checkpoint beyond ``steps`` or unreadable, a kill between log points, and a display-only change
that re-renders without retraining."""

from __future__ import annotations

import sys

import pytest
import torch

from killrun import assert_same_run, killed_then_resumed
from scalewise.models.tokenizer import TokenizerConfig
from scalewise.models.transformer import ScaleTransformer, TransformerConfig
from scalewise.training.distill import DistillConfig
from scalewise.training.resume import ResumeWarning
from scalewise.training.schedule import lr_at
from scalewise.training.tokenizer import TrainTokenizerConfig, train_tokenizer
from scalewise.training.transformer import TrainConfig, train_transformer
from swtest import TINY_MODEL, digits_u8


def tok_cfg(**kw) -> TrainTokenizerConfig:
    base = dict(model=TokenizerConfig(**TINY_MODEL), steps=6, batch_size=8, lr=2e-3, warmup_steps=2,
                dead_code_every=5, dead_code_min_usage=0.5, log_every=1, ckpt_every=3, seed=3)
    return TrainTokenizerConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def images():
    return digits_u8(16)[0][:120]


def train(images, state_dir, **kw):
    on_log = kw.pop("on_log", None)
    return train_tokenizer(tok_cfg(**kw), images, "h", state_dir, on_log=on_log, progress=False)


# ----------------------------------------------------------------------------- the key


@pytest.mark.parametrize("cls, extra", [
    (TrainTokenizerConfig, {"official"}),
    (TrainConfig, {"grid_per_class", "grid_cfg", "threads"}),
    (lambda **kw: DistillConfig(drop=[3], **kw), {"grid_per_class", "grid_cfg", "threads", "bench_batch", "bench_runs"}),
])
def test_the_run_key_holds_only_what_changes_the_mathematics(cls, extra):
    cfg = cls()
    left_out = set(cfg.NOT_IN_KEY)
    assert left_out == {"steps", "device", "log_every", "ckpt_every"} | extra
    assert {"batch_size", "lr", "weight_decay", "warmup_steps", "seed"} <= set(cfg.key_settings())
    assert not left_out & set(cfg.key_settings())
    changed = {"steps": 7, "device": "cuda", "log_every": 9, "ckpt_every": 9, "official": "x.pth", "grid_per_class": 9,
               "grid_cfg": 9.0, "threads": 9, "bench_batch": 9, "bench_runs": 9}
    assert cls(**{k: v for k, v in changed.items() if k in left_out}).key_settings() == cfg.key_settings()
    assert cls(lr=0.5).key_settings() != cfg.key_settings()


def test_the_weights_a_run_starts_from_are_in_its_key(tmp_path):
    """``init_from`` enters the key as the content of its weights: other weights start afresh."""
    mcfg = TransformerConfig(depth=1, width=32, heads=2, vocab_size=16, cvae=4, patch_nums=[1, 2], num_classes=3)
    g = torch.Generator().manual_seed(0)
    tokens_NL, x_NLCv, labels_N = torch.randint(16, (40, 5), generator=g), torch.randn(40, 4, 4, generator=g), \
        torch.randint(3, (40,), generator=g)
    cfg = TrainConfig(steps=3, batch_size=4, warmup_steps=1, log_every=1, ckpt_every=3)

    def run(init: dict):
        return train_transformer(cfg, mcfg, tokens_NL, x_NLCv, labels_N, "h", tmp_path, init, progress=False)

    torch.manual_seed(1)
    init = ScaleTransformer(mcfg).state_dict()
    assert run(init).resumed_from == 0
    same = run({k: v.clone() for k, v in init.items()})  # equal content, other tensors
    assert (same.resumed_from, same.steps_run) == (3, 0)
    other = dict(init, **{"head.weight": init["head.weight"] + 0.01})
    assert run(other).resumed_from == 0


# ----------------------------------------------------------------------------- steps


def test_raising_steps_continues_from_the_last_checkpoint(images, tmp_path):
    first = train(images, tmp_path, steps=6)
    assert (first.resumed_from, first.steps_run) == (0, 6)
    more = train(images, tmp_path, steps=12)
    assert (more.resumed_from, more.steps_run) == (6, 6)
    assert [r["step"] for r in more.history] == list(range(1, 13))
    # the schedule of the new total from the step it resumed at
    assert more.history[6]["lr"] == lr_at(6, 2e-3, 2, 12) != lr_at(6, 2e-3, 2, 6)
    again = train(images, tmp_path, steps=12, log_every=4, ckpt_every=5)  # cadence is not in the key
    assert (again.resumed_from, again.steps_run) == (12, 0)


def test_a_checkpoint_beyond_steps_starts_fresh_with_a_warning(images, tmp_path):
    train(images, tmp_path / "long", steps=9)
    with pytest.warns(ResumeWarning, match=r"last\.pt: the checkpoint is at step 9, beyond steps=6"):
        short = train(images, tmp_path / "long", steps=6)
    assert (short.resumed_from, short.steps_run) == (0, 6)
    assert_same_run(short, train(images, tmp_path / "fresh", steps=6))
    assert torch.load(tmp_path / "long/last.pt", weights_only=True)["step"] == 6


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_an_unreadable_checkpoint_is_moved_aside_and_training_starts_fresh(images, tmp_path, damage):
    train(images, tmp_path, steps=3)
    ckpt = tmp_path / "last.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint")
    with pytest.warns(ResumeWarning, match=r"(?s)last\.pt: unreadable checkpoint .*moved aside to .*last\.pt\.corrupt"):
        result = train(images, tmp_path, steps=3)
    assert (result.resumed_from, result.steps_run) == (0, 3)
    assert (tmp_path / "last.pt.corrupt").read_bytes() != data  # the damaged file, kept for inspection
    assert torch.load(ckpt, weights_only=True)["step"] == 3


# ----------------------------------------------------------------------------- kills


def test_a_kill_between_log_points_resumes_the_logged_averages_too(images, tmp_path):
    """Checkpoint at step 4, log every 3: the average logged at step 6 spans the kill."""
    kw = dict(steps=9, log_every=3, ckpt_every=4)
    full = train(images, tmp_path / "a", **kw)
    resumed = killed_then_resumed(lambda on_log: train(images, tmp_path / "b", on_log=on_log, **kw), 6)
    assert resumed.resumed_from == 4
    assert [r["step"] for r in resumed.history] == [3, 6, 9]
    assert_same_run(full, resumed)


# ----------------------------------------------------------------------------- display-only settings


def test_a_display_setting_re_renders_without_retraining(trained_tokenizer, tmp_path, monkeypatch, capsys):
    """train@var after a change of train.common.grid_cfg: the finished checkpoint is restored, no
    training step runs, and models/var.pt is byte-identical."""
    import yaml

    from scalewise.data.prepare import PrepareConfig, prepare_dataset, save_prepared
    from scalewise.models.checkpoints import save_model
    from swtest import TINY_PARAMS

    prep = PrepareConfig(source="digits", image_size=16, channels=1, test_fraction=0.1, split_seed=0, max_per_class=20)
    save_prepared(prepare_dataset(prep), tmp_path / "data/prepared", prep)
    save_model(tmp_path / "models/tokenizer.pt", trained_tokenizer[0])
    params = {"tracking": {"enabled": False}, "train": {**TINY_PARAMS["train"]}}
    params["train"]["common"] = dict(params["train"]["common"], steps=6, log_every=2, ckpt_every=4)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train", "--model", "var"])
    from stages.train import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    main()
    model = (tmp_path / "models/var.pt").read_bytes()
    assert "resumed" not in capsys.readouterr().out
    params["train"]["common"]["grid_cfg"] = 3.0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    main()
    assert "train@var: resumed from step 6, 0 training steps run" in capsys.readouterr().out
    assert (tmp_path / "models/var.pt").read_bytes() == model
