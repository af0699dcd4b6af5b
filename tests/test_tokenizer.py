"""Defining properties of the multi-scale residual quantizer and the tokenizer API."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scalewise.core.config import ConfigError
from scalewise.models.tokenizer import (
    Tokenizer, TokenizerConfig, area_down, nearest_code, phi_index, upsample,
)
from scalewise.training.tokenizer import to_unit
from swtest import TINY_MODEL


# ----------------------------------------------------------------------------- pure functions

@pytest.mark.parametrize("num_scales,num_phi", [(10, 4), (7, 4), (7, 2), (4, 3), (7, 1), (2, 4)])
def test_phi_index_is_monotone_and_in_range(num_scales, num_phi):
    idx = [phi_index(si, num_scales, num_phi) for si in range(num_scales)]
    assert all(0 <= i < num_phi for i in idx)
    assert idx == sorted(idx), "coarser scales must not use a later phi than finer ones"
    assert idx[0] == 0 and idx[-1] == num_phi - 1 or num_phi == 1 or num_scales < num_phi


def test_phi_index_matches_var_ticks_for_ten_scales():
    # VAR, 4 shared phis, 10 scales: ticks 1/12, 4/12, 7/12, 10/12 -> nearest to si/9.
    assert [phi_index(si, 10, 4) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_area_down_preserves_mean_and_upsample_shape(size):
    x = torch.randn(2, 3, 8, 8)
    y = area_down(x, size)
    assert y.shape == (2, 3, size, size)
    if 8 % size == 0:
        torch.testing.assert_close(y.mean((2, 3)), x.mean((2, 3)), atol=1e-5, rtol=0)
    assert upsample(y, 8).shape == (2, 3, 8, 8)
    assert area_down(x, 8) is x and upsample(x, 8) is x


def test_nearest_code_is_euclidean_argmin():
    g = torch.Generator().manual_seed(0)
    z, cb = torch.randn(200, 6, generator=g), torch.randn(37, 6, generator=g)
    torch.testing.assert_close(nearest_code(z, cb), torch.cdist(z, cb).argmin(1))


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="downsample=8 does not match ch_mult"):
        TokenizerConfig(downsample=8, ch_mult=[1, 2, 2])
    with pytest.raises(ConfigError, match="strictly increasing"):
        TokenizerConfig(patch_nums=[1, 3, 2, 8])
    cfg = TokenizerConfig()
    with pytest.raises(ConfigError, match="not divisible by downsample=4"):
        cfg.check_image_size(30)
    with pytest.raises(ConfigError, match="must end at the latent size"):
        cfg.check_image_size(64)
    cfg.check_image_size(32)


# ----------------------------------------------------------------------------- quantizer properties

def test_decoding_all_scales_reproduces_the_quantizer_f_hat(trained_tokenizer):
    model, test = trained_tokenizer
    x = to_unit(test[:16])
    with torch.no_grad():
        q = model.quantize(model.img_to_f(x))
        f_hat = model.idx_to_f_hat(model.encode(x))
    torch.testing.assert_close(f_hat, q.f_hat, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.decode(model.encode(x)), model.f_to_img(q.f_hat), atol=1e-5, rtol=1e-5)


def test_residual_norm_falls_as_scales_are_added(trained_tokenizer):
    model, test = trained_tokenizer
    x = to_unit(test[:64])
    with torch.no_grad():
        f = model.img_to_f(x)
        idx = model.encode(x)
        norms = [f.norm()] + [(f - model.idx_to_f_hat(idx[: k + 1])).norm() for k in range(len(idx))]
    assert all(b < a for a, b in zip(norms, norms[1:])), [float(n) for n in norms]


def test_indices_round_trip_through_the_codebook(trained_tokenizer):
    model, test = trained_tokenizer
    with torch.no_grad():
        for idx in model.encode(to_unit(test[:8])):
            emb = model.quantize.embed(idx)  # (B, C, p, p)
            back = nearest_code(emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]), model.quantize.embedding.weight)
            assert torch.equal(back.view_as(idx), idx)
            assert idx.dtype == torch.int64 and int(idx.max()) < model.cfg.vocab_size


def test_soft_decoding_with_one_hot_equals_hard_decoding(trained_tokenizer):
    model, test = trained_tokenizer
    V = model.cfg.vocab_size
    with torch.no_grad():
        idx = model.encode(to_unit(test[:4]))
        for k in (1, len(idx)):
            probs = [F.one_hot(i.flatten(1), V).float() for i in idx[:k]]  # (B, p^2, V)
            torch.testing.assert_close(model.decode_soft(probs), model.decode(idx[:k]), atol=1e-5, rtol=1e-5)


def test_soft_decoding_passes_gradients_to_logits():
    model = Tokenizer(TokenizerConfig(**TINY_MODEL)).eval()
    V = model.cfg.vocab_size
    logits = [torch.randn(2, p * p, V, requires_grad=True) for p in model.patch_nums]
    img = model.decode_soft([lg.softmax(-1) for lg in logits])
    img.pow(2).mean().backward()
    assert all(lg.grad is not None and lg.grad.abs().sum() > 0 for lg in logits)


def test_teacher_forcing_input_is_the_next_scale_input(trained_tokenizer):
    model, test = trained_tokenizer
    with torch.no_grad():
        idx = model.encode(to_unit(test[:3]))
        tf = model.teacher_forcing_input(idx)
        pn = model.patch_nums
        assert tf.shape == (3, sum(p * p for p in pn[1:]), model.cfg.cvae)
        start = 0
        for k in range(1, len(pn)):
            expected = area_down(model.idx_to_f_hat(idx[:k]), pn[k]).flatten(2).transpose(1, 2)
            torch.testing.assert_close(tf[:, start:start + pn[k] ** 2], expected, atol=1e-5, rtol=1e-5)
            start += pn[k] ** 2


def test_straight_through_reaches_the_encoder():
    model = Tokenizer(TokenizerConfig(**TINY_MODEL)).train()
    recon, q = model(torch.randn(2, 1, 16, 16))
    (recon.pow(2).mean() + q.commit_loss).backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.quantize.embedding.weight.grad.abs().sum() > 0


def test_dead_codes_are_revived_from_data():
    model = Tokenizer(TokenizerConfig(**TINY_MODEL)).train()
    model(torch.randn(4, 1, 16, 16))
    q = model.quantize
    q.usage_ema.fill_(5.0)
    q.usage_ema[:3] = 0.0
    before = q.embedding.weight.detach().clone()
    assert q.revive_dead_codes(1.0, torch.Generator().manual_seed(0)) == 3
    after = q.embedding.weight.detach()
    assert not torch.equal(after[:3], before[:3]) and torch.equal(after[3:], before[3:])
    pool = q._rest_pool
    for row in after[:3]:
        assert (pool - row).abs().sum(1).min() < 1e-6, "revived codes must be residual vectors"


def test_trained_tokenizer_uses_scales_coarse_to_fine(trained_tokenizer):
    from scalewise.training.tokenizer import evaluate_tokenizer

    model, test = trained_tokenizer
    m = evaluate_tokenizer(model, test)
    by = m["psnr_by_scales"]
    assert len(by) == len(model.patch_nums)
    assert all(b > a for a, b in zip(by, by[1:])), by
    assert m["psnr"] == by[-1] and 0 < m["codebook_usage"] <= 1
