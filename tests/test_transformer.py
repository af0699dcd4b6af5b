"""Defining properties of the masks, the transformer and cached sampling."""

from __future__ import annotations

import pytest
import torch

from scalewise.models.masks import MASK_KINDS, allowed, attn_bias, scale_ids
from scalewise.sampling.generate import Resample, cfg_scale, combine_cfg, filter_logits, generate, simple_resample
from scalewise.models.tokenizer import Tokenizer, TokenizerConfig
from scalewise.models.transformer import ScaleTransformer, TransformerConfig

PATCH_NUMS = [[1, 2, 3, 4], [1, 2, 4], [2, 3, 5]]


def tiny_pair(patch_nums, kind, masked=False, seed=0, depth=2, shared_aln=False):
    torch.manual_seed(seed)
    ds = 4
    tok = Tokenizer(TokenizerConfig(ch=8, ch_mult=[1, 2, 2], downsample=ds, vocab_size=32, cvae=8,
                                    patch_nums=patch_nums, share_quant_resi=2, in_channels=1)).eval()
    model = ScaleTransformer(TransformerConfig(depth=depth, width=32, heads=2, vocab_size=32, cvae=8,
                                               patch_nums=patch_nums, num_classes=3, mask_kind=kind,
                                               masked_objective=masked, shared_aln=shared_aln)).eval()
    # Make every parameter non-trivial (adaLN-zero init would hide mask leaks).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        for p in tok.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model, tok


@pytest.mark.parametrize("patch_nums", PATCH_NUMS)
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_mask_matrix_matches_its_definition(patch_nums, kind):
    s = scale_ids(patch_nums)
    ok = allowed(patch_nums, kind)
    for i in range(len(s)):
        for j in range(len(s)):
            expected = {"causal": s[j] <= s[i], "markov": s[j] == s[i],
                        "markov_prev": s[i] - 1 <= s[j] <= s[i]}[kind]
            assert bool(ok[i, j]) == bool(expected)
    bias = attn_bias(patch_nums, kind)
    assert torch.all(bias[ok] == 0) and torch.all(torch.isinf(bias[~ok]))


@pytest.mark.parametrize("patch_nums", PATCH_NUMS)
@pytest.mark.parametrize("kind,depth", [("causal", 2), ("markov", 2), ("markov_prev", 1), ("markov_prev", 2)])
def test_logits_of_a_scale_ignore_inputs_outside_its_context(patch_nums, kind, depth):
    """causal: scales <= k; markov: scale k; markov_prev: scales k-1..k per layer, so k-depth..k
    through ``depth`` layers (exactly k-1..k for one layer)."""
    model, _ = tiny_pair(patch_nums, kind, depth=depth)
    L = sum(p * p for p in patch_nums)
    first = patch_nums[0] ** 2
    sids = scale_ids(patch_nums)
    labels = torch.tensor([0, 2])
    x = torch.randn(2, L - first, 8)
    base = model(labels, x)
    K = len(patch_nums)
    for k in range(K):
        outside = {"causal": sids > k, "markov": sids != k,
                   "markov_prev": (sids < k - depth) | (sids > k)}[kind]
        inside = ~outside
        x2 = x.clone()
        change = outside[first:]
        if not change.any():
            continue
        x2[:, change] += torch.randn_like(x2[:, change]) * 3
        out = model(labels, x2)
        sl = sids == k
        torch.testing.assert_close(out[:, sl], base[:, sl], atol=1e-5, rtol=1e-5)
        # ...and they do depend on what the mask lets them see (inside, other scales).
        seen = inside[first:] & (sids[first:] != k)
        if seen.any():
            x3 = x.clone()
            x3[:, seen] += 3.0
            assert not torch.allclose(model(labels, x3)[:, sl], base[:, sl], atol=1e-4)


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("masked,shared_aln", [(False, False), (True, False), (False, True)])
def test_cached_sampling_equals_full_recomputation_with_cfg(kind, masked, shared_aln):
    patch_nums = [1, 2, 3, 4]
    model, tok = tiny_pair(patch_nums, kind, masked=masked, shared_aln=shared_aln)
    labels = torch.tensor([0, 1, 2])
    cfg = 2.0
    g = generate(model, tok, labels, cfg=cfg, seed=3, return_logits=True)
    x = tok.teacher_forcing_input(g.tokens)
    cond = model(labels, x)
    uncond = model(torch.full_like(labels, model.num_classes), x)
    for si, sl in enumerate(model.scale_slices()):
        t = cfg_scale(cfg, si, len(patch_nums))
        full = combine_cfg(torch.cat((cond[:, sl], uncond[:, sl])), t)
        torch.testing.assert_close(g.logits[si], full, atol=1e-4, rtol=1e-4)


def test_cache_sizes_follow_the_mask_kind():
    sizes = {}
    for kind in MASK_KINDS:
        model, tok = tiny_pair([1, 2, 3, 4], kind)
        sizes[kind] = generate(model, tok, [0, 1], cfg=1.0, seed=0).cache_bytes
    assert sizes["markov"] == 0 and 0 < sizes["markov_prev"] < sizes["causal"]


def test_generation_is_deterministic_for_a_seed():
    model, tok = tiny_pair([1, 2, 3, 4], "causal")
    a = generate(model, tok, [0, 1], cfg=1.5, seed=7, top_k=10, top_p=0.9, temperature=0.8)
    b = generate(model, tok, [0, 1], cfg=1.5, seed=7, top_k=10, top_p=0.9, temperature=0.8)
    c = generate(model, tok, [0, 1], cfg=1.5, seed=8, top_k=10, top_p=0.9, temperature=0.8)
    assert all(torch.equal(x, y) for x, y in zip(a.tokens, b.tokens)) and torch.equal(a.images, b.images)
    assert not all(torch.equal(x, y) for x, y in zip(a.tokens, c.tokens))
    assert a.images.shape == (2, 1, 16, 16) and a.images.abs().max() <= 1


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 0, 2:]).all()
    kept = torch.isfinite(filter_logits(logits, top_p=0.7)[0, 0])
    assert kept.tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.1)[0, 0]).tolist() == [True, False, False, False]
    assert torch.equal(filter_logits(logits), logits)


def test_simple_resampling_only_touches_low_probability_tokens():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.7, 0.2, 0.06, 0.04]]).repeat(1, 50, 1)
    tokens = torch.randint(0, 4, (1, 50), generator=g)
    new, iters = simple_resample(probs, tokens, threshold=0.1, iters=3, generator=torch.Generator().manual_seed(5))
    again, _ = simple_resample(probs, tokens, threshold=0.1, iters=3, generator=torch.Generator().manual_seed(5))
    high = tokens < 2
    assert torch.equal(new[high], tokens[high]), "tokens above the threshold never change"
    assert torch.equal(new, again) and 1 <= iters <= 3
    assert (new < 2).float().mean() > (tokens < 2).float().mean()
    none, zero = simple_resample(probs, torch.zeros_like(tokens), 0.1, 3, g)
    assert zero == 0 and torch.equal(none, torch.zeros_like(tokens))


@pytest.mark.parametrize("kind", ["simple", "masked"])
def test_resampling_respects_iterations_and_is_deterministic(kind):
    model, tok = tiny_pair([1, 2, 3, 4], "markov", masked=True)
    rs = Resample(kind=kind, threshold=0.5, iters=2)
    a = generate(model, tok, [0, 1], cfg=1.0, seed=1, resample=rs)
    b = generate(model, tok, [0, 1], cfg=1.0, seed=1, resample=rs)
    assert all(torch.equal(x, y) for x, y in zip(a.tokens, b.tokens))
    assert all(0 <= n <= 2 for n in a.resample_iters) and max(a.resample_iters) >= 1
    base = generate(model, tok, [0, 1], cfg=1.0, seed=1)
    assert torch.equal(a.tokens[0], base.tokens[0]), "scale 1 is below min_scale and is never resampled"


def test_masked_resampling_keeps_confident_tokens():
    model, tok = tiny_pair([1, 2, 3, 4], "causal", masked=True)
    g0 = generate(model, tok, [0, 1, 2], cfg=1.0, seed=4, return_logits=True)
    # With one refinement at the last scale only, confident tokens of the first draw stay.
    rs = Resample(kind="masked", threshold=0.2, iters=1, min_scale=3)
    g1 = generate(model, tok, [0, 1, 2], cfg=1.0, seed=4, resample=rs)
    probs = filter_logits(g0.logits[3]).softmax(-1)
    p_tok = probs.gather(-1, g0.tokens[3].flatten(1).unsqueeze(-1)).squeeze(-1)
    confident = p_tok >= 0.2
    assert torch.equal(g1.tokens[3].flatten(1)[confident], g0.tokens[3].flatten(1)[confident])
    assert all(torch.equal(a, b) for a, b in zip(g0.tokens[:3], g1.tokens[:3]))


def test_bad_sampling_input_is_a_clear_error():
    model, tok = tiny_pair([1, 2, 3, 4], "causal")
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 2\]"):
        generate(model, tok, [3])
    with pytest.raises(ValueError, match="cfg must be >= 0"):
        generate(model, tok, [0], cfg=-1)
    with pytest.raises(ValueError, match=r"top_p must lie in \(0, 1\]"):
        generate(model, tok, [0], top_p=1.5)
    with pytest.raises(ValueError, match="masked resampling needs a model trained with masked_objective"):
        generate(model, tok, [0], resample=Resample(kind="masked"))
    with pytest.raises(ValueError, match="unknown resample kind 'fancy'"):
        Resample(kind="fancy")
    other, _ = tiny_pair([1, 2, 4], "causal")
    with pytest.raises(ValueError, match="does not match the tokenizer"):
        generate(other, tok, [0])
    from scalewise.core.config import ConfigError
    with pytest.raises(ConfigError, match="mask_kind='blockwise' is unknown"):
        TransformerConfig(mask_kind="blockwise")


def test_draw_follows_the_distribution_and_never_picks_impossible_tokens():
    from scalewise.sampling.generate import draw

    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3]).repeat(2, 20000, 1)
    freq = torch.bincount(draw(probs, g).flatten(), minlength=4).float() / 40000
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.0, 0.6, 0.3]), atol=0.01, rtol=0)
    one_hot = torch.zeros(1, 7, 4)
    one_hot[..., 3] = 1
    assert draw(one_hot, g).eq(3).all()


def test_bf16_weights_generate_the_same_kind_of_output():
    model, tok = tiny_pair([1, 2, 3, 4], "causal")
    g32 = generate(model, tok, [0, 1], cfg=1.5, seed=0, return_logits=True)
    g16 = generate(model.to(torch.bfloat16), tok.to(torch.bfloat16), [0, 1], cfg=1.5, seed=0, return_logits=True)
    assert g16.images.shape == g32.images.shape and torch.isfinite(g16.images.float()).all()
    # bf16 logits stay close to fp32 ones on the first scale (same inputs there).
    torch.testing.assert_close(g16.logits[0], g32.logits[0], atol=0.15, rtol=0.05)


def test_unconditional_model_has_one_class_and_a_null_class():
    _, tok = tiny_pair([1, 2, 3, 4], "markov")
    model = ScaleTransformer(TransformerConfig(depth=1, width=32, heads=2, vocab_size=32, cvae=8,
                                               patch_nums=[1, 2, 3, 4], num_classes=1, mask_kind="markov")).eval()
    assert model.class_emb.num_embeddings == 2
    g = generate(model, tok, [0, 0, 0], cfg=1.0, seed=0)
    assert g.images.shape[0] == 3


def test_inplace_gelu_matches_torch_tanh_gelu():
    from scalewise.models.transformer import gelu_tanh_

    x = torch.linspace(-8, 8, 4001)
    expected = torch.nn.functional.gelu(x, approximate="tanh")
    assert torch.allclose(gelu_tanh_(x.clone()), expected, atol=2e-6)


def test_inference_block_equals_training_block():
    """The no-grad fast path (in-place GELU, fused modulation) computes the same function."""
    torch.manual_seed(0)
    model = ScaleTransformer(TransformerConfig(depth=2, vocab_size=32, cvae=4, patch_nums=[1, 2, 3], num_classes=3))
    for blk in model.blocks:  # non-zero AdaLN so the modulation matters
        torch.nn.init.normal_(blk.ada_lin[1].weight, std=0.05)
    labels = torch.tensor([0, 2])
    x = torch.randn(2, model.cfg.num_tokens - 1, 4)
    with torch.enable_grad():
        grad_path = model(labels, x)
    with torch.no_grad():
        fast_path = model(labels, x)
    assert torch.allclose(grad_path, fast_path, atol=1e-5)


def test_shared_adaln_blocks_differ_by_their_offsets_only():
    model, _ = tiny_pair([1, 2, 3], "causal", shared_aln=True, depth=3)
    assert not any(hasattr(blk, "ada_lin") for blk in model.blocks)
    cond_BD = model.cond(torch.tensor([0, 2]))
    mods = model.block_modulations(cond_BD)
    shared = model.shared_ada_lin(cond_BD).view(2, 1, 6, -1)
    for blk, mod in zip(model.blocks, mods):
        torch.testing.assert_close(mod, blk.ada_gss + shared)
    assert not torch.allclose(mods[0], mods[1])


@pytest.mark.parametrize("shared_aln", [False, True])
def test_adaln_modulation_runs_once_per_sample_not_per_scale(shared_aln):
    model, tok = tiny_pair([1, 2, 3, 4], "causal", shared_aln=shared_aln)
    calls = []
    lins = [model.head_nm.ada_lin] + ([model.shared_ada_lin] if shared_aln else [b.ada_lin for b in model.blocks])
    for lin in lins:
        lin.register_forward_hook(lambda mod, inp, out: calls.append(mod))
    generate(model, tok, [0, 1], cfg=1.5, seed=0, resample=Resample(kind="simple"))
    assert len(calls) == len(lins)  # 4 scales, one modulation each
