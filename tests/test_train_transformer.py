"""Transformer training: exact resume, masked objective batches, and class conditioning that works."""

from __future__ import annotations

import pytest
import torch

from killrun import assert_same_run, killed_then_resumed
from scalewise.sampling.generate import generate
from scalewise.core.images import to_uint8
from scalewise.training.batches import encode_dataset, masked_batch
from scalewise.training.transformer import (
    ModelSettings, TrainConfig, VariantConfig, build_model_config, class_mean_proxy, train_transformer,
)


def cfg(**kw) -> TrainConfig:
    base = dict(model=ModelSettings(depth=1, width=32, heads=2, mlp_ratio=2.0), steps=8, batch_size=8, lr=2e-3,
                warmup_steps=2, log_every=1, ckpt_every=3, seed=1, masked_prob=0.5)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def coded(trained_tokenizer):
    from swtest import digits_u8

    tok, _ = trained_tokenizer
    images, labels = digits_u8(16)
    tokens, x = encode_dataset(tok, images, progress=False)
    return tok, images, labels, tokens, x


def test_masked_batches_reveal_part_of_one_scale_and_score_the_rest():
    slices = [slice(0, 1), slice(1, 5), slice(5, 14), slice(14, 30)]
    tokens = torch.zeros(200, 30, dtype=torch.long)
    revealed, scored = masked_batch(tokens, slices, 0.5, torch.Generator().manual_seed(0))
    masked_rows = ~scored.all(1)
    assert 60 < int(masked_rows.sum()) < 140
    assert not (revealed & scored).any()
    assert not revealed[~masked_rows].any()
    for b in masked_rows.nonzero().flatten().tolist():
        touched = [k for k, sl in enumerate(slices) if (revealed[b, sl] | scored[b, sl]).any()]
        assert len(touched) == 1 and touched[0] >= 1, "one scale, never the first"
        sl = slices[touched[0]]
        assert bool((revealed[b, sl] | scored[b, sl]).all())


def test_transformer_training_resumes_exactly(coded, tmp_path):
    tok, _, labels, tokens, x = coded
    mcfg = build_model_config(cfg().model, VariantConfig("markov"), tok, 10)
    full = train_transformer(cfg(), mcfg, tokens, x, labels, "h", tmp_path / "a", progress=False)
    resumed = killed_then_resumed(lambda on_log: train_transformer(
        cfg(), mcfg, tokens, x, labels, "h", tmp_path / "b", on_log=on_log, progress=False), 5)
    assert resumed.resumed_from == 3
    assert_same_run(full, resumed)


def test_nan_loss_is_a_clear_error(coded, tmp_path):
    tok, _, labels, tokens, x = coded
    mcfg = build_model_config(cfg().model, VariantConfig("causal"), tok, 10)
    with pytest.raises(FloatingPointError, match="loss is nan.*last good checkpoint"):
        train_transformer(cfg(), mcfg, tokens, x.clone().fill_(float("nan")), labels, "h", tmp_path, progress=False)


@pytest.mark.slow
def test_class_conditional_samples_are_nearest_their_class_mean(coded, tmp_path):
    """Evaluator-free proxy: a briefly trained model's per-class samples are closer, in pixel
    space, to their own class mean than to other classes' means (chance = 0.1)."""
    tok, images, labels, tokens, x = coded
    tcfg = cfg(model=ModelSettings(depth=2, width=64, heads=2), steps=250, batch_size=32, lr=3e-3,
               warmup_steps=20, log_every=50, ckpt_every=1000, masked_prob=0.0)
    mcfg = build_model_config(tcfg.model, VariantConfig("causal"), tok, 10)
    model = train_transformer(tcfg, mcfg, tokens, x, labels, "h", tmp_path, progress=False).model
    sample_labels = torch.arange(10).repeat_interleave(5)
    g = generate(model, tok, sample_labels, cfg=2.0, seed=0)
    proxy = class_mean_proxy(to_uint8(g.images), sample_labels, images, labels, 10)
    assert proxy >= 0.5, proxy
    assert class_mean_proxy(images, labels, images, labels, 10) > 0.8  # the proxy itself is meaningful
