"""Posterior sampling: filters, the gradient path to the logits, guidance, clamping, per-sample norms,
and the scale loop it shares with plain generation (resampling included)."""

from __future__ import annotations

import pytest
import torch

from scalewise.core.images import to_unit
from scalewise.posterior.filters import FrequencyAwareFilter, bandwidth, lowpass
from scalewise.posterior.clamp import clamp_plan
from scalewise.posterior.guidance import GradientGuidedSampler, _GuidanceHooks
from scalewise.posterior.guidance_config import PosteriorGuidanceConfig
from scalewise.posterior.measurement_model import MeasurementModel
from scalewise.posterior.measurements import build_operator
from scalewise.posterior.relax import gumbel_noise, relaxed_tokens
from scalewise.posterior.restoration import make_sampler, method_flags, restore, score
from scalewise.models.transformer import ScaleTransformer, TransformerConfig
from scalewise.sampling.generate import Resample, generate


def test_bandwidth_reaches_full_band_at_the_measurement_nyquist_limit():
    assert bandwidth(8, 8, 1.0) == 1.0
    assert bandwidth(2, 8, 1.0) == pytest.approx(0.25)
    assert bandwidth(2, 8, 0.25) == 1.0  # SR x4: the 2x2 scale already resolves all of y
    assert bandwidth(1, 8, 0.25) == pytest.approx(0.5)
    fractions = [bandwidth(p, 8, 0.5) for p in (1, 2, 3, 4, 5, 6, 8)]
    assert fractions == sorted(fractions) and fractions[3:] == [1.0] * 4
    with pytest.raises(ValueError, match="measurement_band"):
        bandwidth(2, 8, 0.0)


def test_filter_split_is_exact_and_low_band_is_a_local_mean():
    r = torch.randn(2, 1, 16, 16)
    f = FrequencyAwareFilter((1, 2, 4), 1.0)
    low, high = f.split(r, 0)
    assert low.shape[-1] == 4 and torch.allclose(low, lowpass(r, 0.25))
    up = torch.nn.functional.interpolate(low, size=(16, 16), mode="nearest")
    assert torch.allclose(up + high, r, atol=1e-6)
    low_full, high_full = f.split(r, 2)
    assert torch.equal(low_full, r) and torch.count_nonzero(high_full) == 0
    off = FrequencyAwareFilter((1, 2, 4), 1.0, enabled=False)
    assert torch.equal(off.split(r, 0)[0], r)


@pytest.fixture(scope="module")
def setup(trained_tokenizer):
    tok, test_u8 = trained_tokenizer
    tok.eval()
    torch.manual_seed(0)
    cfg = TransformerConfig(depth=1, width=32, heads=2, vocab_size=tok.cfg.vocab_size, cvae=tok.cfg.cvae,
                            patch_nums=list(tok.patch_nums), num_classes=10, mask_kind="markov")
    model = ScaleTransformer(cfg).eval()
    x = to_unit(test_u8[:6])
    return model, tok, x


def test_relaxations_are_distributions_with_gradients():
    z = torch.randn(2, 3, 5, requires_grad=True)
    g = gumbel_noise(z.shape, torch.Generator().manual_seed(0), z.device)
    for kind in ("gumbel", "straight_through"):
        p = relaxed_tokens(z, kind, 0.7, g)
        assert torch.allclose(p.sum(-1), torch.ones(2, 3), atol=1e-5)
        (grad,) = torch.autograd.grad((p * torch.randn(5)).sum(), z)
        assert grad.abs().sum() > 0
    hard = relaxed_tokens(z, "straight_through", 1.0)
    assert torch.allclose(hard.detach(), torch.nn.functional.one_hot(z.argmax(-1), 5).float(), atol=1e-6)


@pytest.mark.parametrize("estimate", ["complete", "partial"])
@pytest.mark.parametrize("relax", ["gumbel", "straight_through"])
@pytest.mark.parametrize("grad_wrt,alpha", [("logits", 0.1), ("probs", 0.01)])
def test_guided_step_lowers_the_measurement_loss(setup, relax, grad_wrt, alpha, estimate):
    """The gradient reaches the logits through the relaxation and one step lowers the loss."""
    model, tok, x = setup
    op = build_operator("superres", {"factor": 4}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    y = op(x)
    cfg = PosteriorGuidanceConfig(alpha=alpha, relax=relax, tau=1.0, track_loss=True, grad_steps=1, grad_wrt=grad_wrt,
                                  guide_from_scale=0, estimate=estimate, stop_at_noise=0.0)
    sampler = make_sampler(model, tok, op, cfg)
    res = sampler.sample(y, seed=0)
    before = torch.stack([pair[0] for pair in res.loss_by_scale])  # (K, B)
    after = torch.stack([pair[1] for pair in res.loss_by_scale])
    assert torch.isfinite(after).all()
    # nearly every (scale, image) improves; a straight-through step jumps between one-hot tokens
    assert (after < before).float().mean() > (0.75 if relax == "gumbel" else 0.5)
    assert after.sum() < before.sum()


def test_guidance_lowers_measurement_error_against_the_prior(setup):
    model, tok, x = setup
    op = build_operator("box_inpaint", {"size": 8}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    y = op(x)
    cfg = PosteriorGuidanceConfig(alpha=1.0, grad_steps=2, guide_from_scale=0)
    prior = restore(model, tok, op, y, "prior", cfg, seed=0)
    guided = restore(model, tok, op, y, "guided", cfg, seed=0)
    c_prior = score(x, prior.images, op, y)["consistency"].mean()
    c_guided = score(x, guided.images, op, y)["consistency"].mean()
    assert c_guided < 0.7 * c_prior


def test_residual_norm_is_per_sample(setup):
    """Another image's measurement in the batch must not change this image's restoration."""
    model, tok, x = setup
    op = build_operator("superres", {"factor": 2}, x.shape[-1], x.shape[1], num_images=2)
    y = op(x[:2])
    y_other = y.clone()
    y_other[1] = y_other[1] * 5 + 3  # a wildly different second measurement
    cfg = PosteriorGuidanceConfig(alpha=1.0, grad_steps=3, guide_from_scale=1)
    a, b = (make_sampler(model, tok, op, cfg).sample(yy, seed=0) for yy in (y, y_other))
    assert torch.equal(a.images[0], b.images[0])
    assert not torch.equal(a.images[1], b.images[1])


def test_clamp_with_everything_known_reproduces_the_encoding(setup):
    model, tok, x = setup
    op = build_operator("identity", {}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    plan = clamp_plan(tok, op, x)
    assert all(bool(known.all()) for _, known in plan)
    cfg = PosteriorGuidanceConfig()
    res = make_sampler(model, tok, op, cfg).sample(x, guided=False, clamp=True, seed=3)
    expected = tok.encode(x)
    for got, want in zip(res.tokens, expected):
        assert torch.equal(got, want)


def test_guidance_under_clamp_holds_the_clamped_tokens(setup):
    """clamp+guided: the estimate the gradient sees carries the clamped tokens where known."""
    model, tok, x = setup
    op = build_operator("identity", {}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    cfg = PosteriorGuidanceConfig(alpha=0.05, track_loss=True, estimate="partial", guide_from_scale=0,
                                  stop_at_noise=0.0)
    sampler = make_sampler(model, tok, op, cfg)
    hooks = _GuidanceHooks(sampler, sampler.measurement, x, True, None, torch.Generator().manual_seed(2),
                           x.shape[0], 1)
    f_hat = torch.zeros(x.shape[0], tok.cfg.cvae, tok.patch_nums[-1], tok.patch_nums[-1])
    logits = torch.randn(x.shape[0], 4, tok.cfg.vocab_size, generator=torch.Generator().manual_seed(0))
    noise = gumbel_noise(logits.shape, torch.Generator().manual_seed(3), logits.device)
    tokens = torch.randint(0, tok.cfg.vocab_size, (x.shape[0], 4), generator=torch.Generator().manual_seed(1))
    everything = torch.ones_like(tokens, dtype=torch.bool)
    _, (before, after), _ = hooks._guide(1, 2, logits, f_hat, noise, (tokens, everything), 1)
    torch.testing.assert_close(before, after)  # the estimate is the clamp's: the update cannot move it
    half = everything.clone()
    half[:, :2] = False
    z, (before, after), _ = hooks._guide(1, 2, logits, f_hat, noise, (tokens, half), 1)
    assert after.sum() < before.sum()
    assert torch.equal(z[:, 2:], logits[:, 2:])  # held positions keep their logits


def test_clamp_plan_for_a_box_marks_only_observed_footprints(setup):
    model, tok, x = setup
    op = build_operator("box_inpaint", {"size": 8}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    plan = clamp_plan(tok, op, op(x), known_fraction=1.0)
    tokens, known = plan[-1]  # finest scale: 4x4 latent of a 16 px image, box 8 px in the centre
    known_map = known.view(-1, 4, 4)[0]
    assert not known_map[1:3, 1:3].any() and known_map[0].all()


def test_sampler_is_deterministic_and_works_for_causal_and_class_labels(setup):
    _, tok, x = setup
    torch.manual_seed(1)
    model = ScaleTransformer(TransformerConfig(depth=1, width=32, heads=2, vocab_size=tok.cfg.vocab_size,
                                               cvae=tok.cfg.cvae, patch_nums=list(tok.patch_nums), num_classes=10,
                                               mask_kind="causal")).eval()
    op = build_operator("random_inpaint", {"ratio": 0.5}, x.shape[-1], x.shape[1], num_images=x.shape[0], seed=2)
    y = op(x)
    sampler = make_sampler(model, tok, op, PosteriorGuidanceConfig(alpha=1.0, guide_from_scale=1))
    a = sampler.sample(y, labels=[0, 1, 2, 3, 4, 5], clamp=True, seed=5)
    b = sampler.sample(y, labels=[0, 1, 2, 3, 4, 5], clamp=True, seed=5)
    assert torch.equal(a.images, b.images)
    with pytest.raises(ValueError, match="labels"):
        sampler.sample(y, labels=[0, 1], seed=5)


def test_bad_input_is_named(setup):
    model, tok, x = setup
    with pytest.raises(ValueError, match="unknown sampling method"):
        method_flags("dps")
    with pytest.raises(ValueError, match="alpha_schedule"):
        PosteriorGuidanceConfig(alpha_schedule="cosine")
    with pytest.raises(ValueError, match="relax"):
        PosteriorGuidanceConfig(relax="hard")
    sr = build_operator("superres", {"factor": 2}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    box = build_operator("box_inpaint", {"size": 4}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    sampler = make_sampler(model, tok, sr, PosteriorGuidanceConfig())
    with pytest.raises(ValueError, match="another operator"):
        sampler.sample(box(x))  # y from another operator
    with pytest.raises(ValueError, match="nothing would be guided"):
        sampler.sample(sr(x))  # default guide_from_scale=4, the tiny model has 4 scales
    other = ScaleTransformer(TransformerConfig(depth=1, width=32, heads=2, vocab_size=7, cvae=tok.cfg.cvae,
                                               patch_nums=list(tok.patch_nums), num_classes=10))
    with pytest.raises(ValueError, match="does not match"):
        GradientGuidedSampler(other, tok, MeasurementModel(sr))


def _tiny_model(tok, kind: str, masked: bool, seed: int = 1) -> ScaleTransformer:
    torch.manual_seed(seed)
    cfg = TransformerConfig(depth=1, width=32, heads=2, vocab_size=tok.cfg.vocab_size, cvae=tok.cfg.cvae,
                            patch_nums=list(tok.patch_nums), num_classes=10, mask_kind=kind, masked_objective=masked)
    model = ScaleTransformer(cfg).eval()
    with torch.no_grad():  # off the adaLN-zero init: every block and the refinement inputs matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


@pytest.mark.parametrize("kind,resample", [("causal", "simple"), ("markov_prev", "masked")])
def test_unguided_posterior_sampling_is_plain_generation(setup, kind, resample):
    """One loop serves both: guidance off and no clamp, the sampler draws what generate() draws."""
    _, tok, x = setup
    model = _tiny_model(tok, kind, masked=resample == "masked")
    op = build_operator("superres", {"factor": 2}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    labels = [0, 1, 2, 3, 4, 5]
    cfg = PosteriorGuidanceConfig(cfg=2.0, top_k=20, temperature=0.9, resample=resample, resample_threshold=0.05,
                                  resample_iters=2, resample_select="threshold", guide_from_scale=0)
    post = make_sampler(model, tok, op, cfg).sample(op(x), labels, guided=False, seed=4)
    gen = generate(model, tok, labels, cfg=2.0, top_k=20, temperature=0.9, seed=4,
                   resample=Resample(kind=resample, threshold=0.05, iters=2, min_scale=0))
    assert sum(gen.resample_iters) > 0 and gen.resample_iters[0] > 0  # resampled, from scale 0 on
    assert post.resample_iters == gen.resample_iters
    assert all(torch.equal(a, b) for a, b in zip(post.tokens, gen.tokens))
    assert torch.equal(post.images, gen.images)


def test_posterior_masked_resampling_repredicts_every_scale(setup):
    _, tok, x = setup
    model = _tiny_model(tok, "markov", masked=True)
    op = build_operator("box_inpaint", {"size": 8}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    y = op(x)
    common = dict(alpha=1.0, grad_steps=1, guide_from_scale=1, resample_select="lowest", resample_fraction=0.5,
                  clamp=False)  # every token free to re-mask
    off = make_sampler(model, tok, op, PosteriorGuidanceConfig(**common, resample="masked")).sample(y, seed=2)
    cfg = PosteriorGuidanceConfig(**common, resample="masked", resample_iters=2)
    calls = []
    reveal = model.reveal_embed
    model.reveal_embed = lambda tokens, revealed: calls.append(tokens.shape[1]) or reveal(tokens, revealed)
    try:
        on = make_sampler(model, tok, op, cfg).sample(y, seed=2)
    finally:
        del model.reveal_embed
    K = len(tok.patch_nums)
    assert off.resample_iters == [0] * K
    assert on.resample_iters == [2] * K  # the least likely half of every scale, from scale 0 on
    assert calls == [p * p for p in tok.patch_nums for _ in range(2)]  # re-predicted by the model
    assert not all(torch.equal(a, b) for a, b in zip(on.tokens, off.tokens))
    simple_cfg = PosteriorGuidanceConfig(**{**common, "resample_select": "threshold"}, resample="simple",
                                         resample_threshold=1.0, resample_iters=2)
    simple = make_sampler(model, tok, op, simple_cfg).sample(y, seed=2)
    assert not all(torch.equal(a, b) for a, b in zip(on.tokens, simple.tokens))
    unmasked = _tiny_model(tok, "markov", masked=False)
    with pytest.raises(ValueError, match="masked resampling needs a model trained with masked_objective"):
        make_sampler(unmasked, tok, op, cfg)


def test_bad_resample_setting_is_named():
    for bad in ("none", "fancy"):
        with pytest.raises(ValueError, match=f"resample={bad!r} is unknown"):
            PosteriorGuidanceConfig(resample=bad)
    with pytest.raises(ValueError, match="resample_threshold"):
        PosteriorGuidanceConfig(resample_threshold=1.5, resample_iters=1)
