"""Defining properties of the posterior sampler: the Gaussian likelihood, alpha 0 = the prior,
particles weighted by the likelihood, look-ahead estimates that leave the loop unchanged,
custom callable operators, the data-consistency projection and presets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scalewise.core.config import ConfigError
from scalewise.core.images import to_unit
from scalewise.models.transformer import ScaleTransformer, TransformerConfig
from scalewise.posterior.guidance import GradientGuidedSampler
from scalewise.posterior import guidance_config as guidance_config_module
from scalewise.posterior.guidance_config import KIND_PRESETS, PRESETS, PosteriorGuidanceConfig, guidance_config
from scalewise.posterior.measurement_model import MeasurementModel
from scalewise.posterior.measurements import build_operator
from scalewise.posterior.particles import (
    effective_sample_size, flat_ancestors, normalised_weights, systematic_resample, weighted_mean,
)
from scalewise.posterior.restoration import applicable_methods, make_sampler, restore_methods, score
from scalewise.sampling.complete import complete_scales
from scalewise.sampling.loop import ScaleHooks, ScaleSettings, run_scales
from scalewise.sampling.resample import lowest_scores


def _model(tok, kind: str, seed: int = 1, masked: bool = True) -> ScaleTransformer:
    torch.manual_seed(seed)
    cfg = TransformerConfig(depth=1, width=32, heads=2, vocab_size=tok.cfg.vocab_size, cvae=tok.cfg.cvae,
                            patch_nums=list(tok.patch_nums), num_classes=10, mask_kind=kind, masked_objective=masked)
    model = ScaleTransformer(cfg).eval()
    with torch.no_grad():  # off the adaLN-zero init so every block matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


@pytest.fixture(scope="module")
def setup(trained_tokenizer):
    tok, test_u8 = trained_tokenizer
    return tok.eval(), to_unit(test_u8[:6])


# ----------------------------------------------------------------------------- the reduction to the prior


@pytest.mark.parametrize("kind", ["causal", "markov"])
def test_alpha_zero_is_exactly_prior_sampling(setup, kind):
    tok, x = setup
    model = _model(tok, kind)
    op = build_operator("box_inpaint", {"size": 6}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    y = op.measure(x, 0.05, torch.Generator().manual_seed(0))
    cfg = PosteriorGuidanceConfig(alpha=0.0, guide_from_scale=0, particles=1, clamp=False)
    sampler = make_sampler(model, tok, op, cfg)
    guided, prior = sampler.sample(y, guided=True, seed=3), sampler.sample(y, guided=False, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(guided.tokens, prior.tokens))
    assert torch.equal(guided.images, prior.images)
    clamped = make_sampler(model, tok, op, PosteriorGuidanceConfig(alpha=0.0, guide_from_scale=0, particles=1))
    assert torch.equal(clamped.sample(y, seed=3).images, clamped.sample(y, guided=False, clamp=True, seed=3).images)
    on = make_sampler(model, tok, op, PosteriorGuidanceConfig(alpha=1.0, guide_from_scale=0, particles=1))
    assert not torch.equal(on.sample(y, seed=3).images, prior.images)


def test_guidance_lowers_the_residual_against_the_prior_on_the_same_seed(setup):
    tok, x = setup
    model = _model(tok, "markov")
    op, y = _superres(x)
    cfg = PosteriorGuidanceConfig(guide_from_scale=1, grad_steps=4, particles=1)
    res = restore_methods(model, tok, op, y, ["prior", "guided"], cfg, seed=0)
    c = {m: score(x, r.images, op, y)["consistency"] for m, r in res.items()}
    assert (c["guided"] < c["prior"]).all()
    assert c["guided"].mean() < 0.6 * c["prior"].mean()


def test_a_sample_stops_at_the_noise_level(setup):
    tok, x = setup
    model = _model(tok, "markov")
    op = build_operator("superres", {"factor": 2}, x.shape[-1], x.shape[1])
    y = op(x)
    never = make_sampler(model, tok, op, PosteriorGuidanceConfig(guide_from_scale=1, stop_at_noise=1e6, particles=1))
    assert never.sample(y, seed=0).steps_by_scale == [0] * len(tok.patch_nums)  # already "at the noise level"
    always = make_sampler(model, tok, op, PosteriorGuidanceConfig(guide_from_scale=1, stop_at_noise=0.0, grad_steps=3,
                                                                  particles=1))
    assert always.sample(y, seed=0).steps_by_scale == [0, 3, 3, 3]


# ----------------------------------------------------------------------------- particles


def test_particle_weights_and_resampling_follow_the_likelihood():
    nll_BN = torch.tensor([[1.0, 2.0, 4.0, 8.0], [0.0, 0.0, 0.0, 0.0]])
    w = normalised_weights(-0.5 * nll_BN)
    torch.testing.assert_close(w[0], torch.softmax(-0.5 * nll_BN[0], 0))
    assert torch.allclose(w[1], torch.full((4,), 0.25)) and effective_sample_size(w)[1] == pytest.approx(4.0)
    g = torch.Generator().manual_seed(0)
    w_many = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).expand(4000, 4)
    anc = systematic_resample(w_many, g)
    copies = torch.stack([(anc == i).sum(1) for i in range(4)], 1).float()  # (rows, N)
    torch.testing.assert_close(copies.mean(0), 4 * w_many[0], atol=0.03, rtol=0)  # E[copies] = N w
    assert ((copies - 4 * w_many[0]).abs() < 1).all()  # systematic: floor or ceil of N w
    rows = flat_ancestors(torch.tensor([[1, 1], [0, 1]]))
    assert rows.tolist() == [1, 1, 2, 3]
    x = torch.arange(8.0).view(2, 2, 2)
    torch.testing.assert_close(weighted_mean(x, torch.tensor([[1.0, 0.0], [0.5, 0.5]])),
                               torch.tensor([[0.0, 1.0], [5.0, 6.0]]))


def _superres(x: torch.Tensor):
    """A x2 super-resolution operator and its noisy measurement of ``x``."""
    op = build_operator("superres", {"factor": 2}, x.shape[-1], x.shape[1])
    return op, op.measure(x, 0.05, torch.Generator().manual_seed(0))


def test_final_particle_weights_are_the_tempered_likelihood(setup):
    """Without resampling the incremental weights telescope to exp(-lambda NLL(final image))."""
    tok, x = setup
    model = _model(tok, "markov")
    op, y = _superres(x)
    cfg = PosteriorGuidanceConfig(guide_from_scale=1, grad_steps=2, particles=3, particle_temperature=0.01,
                                  ess_threshold=0.0)
    sampler = make_sampler(model, tok, op, cfg)
    res = sampler.sample(y, seed=1)
    imgs = res.particle_images  # (B, N, C, H, W), clamped to [-1, 1] by the decoder
    nll = sampler.measurement.neg_log_likelihood(imgs.flatten(0, 1), y.repeat_interleave(3, 0)).view(-1, 3)
    torch.testing.assert_close(res.weights, torch.softmax(-0.01 * nll, 1), atol=1e-4, rtol=0)
    best = sampler.measurement.residual_norm(imgs.flatten(0, 1), y.repeat_interleave(3, 0)).view(-1, 3).argmin(1)
    assert torch.equal(res.images, imgs[torch.arange(imgs.shape[0]), best])
    torch.testing.assert_close(res.mean_images, weighted_mean(imgs, res.weights))


def test_untempered_particles_are_independent_samples_with_uniform_weights(setup):
    tok, x = setup
    model = _model(tok, "markov")
    op, y = _superres(x)
    cfg = PosteriorGuidanceConfig(guide_from_scale=1, grad_steps=1, particles=3, particle_temperature=0.0)
    res = make_sampler(model, tok, op, cfg).sample(y, seed=0)
    assert not res.resampled_at and torch.equal(res.weights, torch.full((x.shape[0], 3), 1 / 3))
    torch.testing.assert_close(res.mean_images, res.particle_images.mean(1))


def test_particles_are_resampled_towards_the_likely_ones(setup):
    tok, x = setup
    model = _model(tok, "causal")
    op, y = _superres(x)
    cfg = PosteriorGuidanceConfig(guide_from_scale=1, grad_steps=1, particles=4, particle_temperature=1.0,
                                  ess_threshold=1.0)
    res = make_sampler(model, tok, op, cfg).sample(y, seed=0)
    assert res.resampled_at  # a sharp likelihood degenerates the weights: the particles were resampled
    assert res.particle_images.shape[:2] == (x.shape[0], 4)


# ----------------------------------------------------------------------------- the loop's new hooks


class _LookAhead(ScaleHooks):
    """Runs the look-ahead at every scale and throws the result away."""

    def __init__(self):
        self.state = None
        self.estimates = []

    def on_bind(self, state):
        self.state = state

    def on_logits(self, si, p, logits_BlV, f_hat_BChw):
        self.estimates.append(complete_scales(self.state, si, f_hat_BChw, logits_BlV.argmax(-1)))
        return logits_BlV


@pytest.mark.parametrize("kind", ["causal", "markov", "markov_prev"])
def test_look_ahead_leaves_the_sampling_loop_unchanged(setup, kind):
    tok, _ = setup
    model = _model(tok, kind)
    labels = torch.tensor([0, 3, 5])
    settings = ScaleSettings(cfg=1.5)
    plain = run_scales(model, tok, labels, settings, torch.Generator().manual_seed(0))
    hooks = _LookAhead()
    looked = run_scales(model, tok, labels, settings, torch.Generator().manual_seed(0), hooks)
    assert torch.equal(plain.images, looked.images)
    assert len(hooks.estimates) == len(tok.patch_nums)
    # greedy draws: the estimate after the first scale is the greedy sample itself
    greedy = run_scales(model, tok, labels, ScaleSettings(cfg=1.5, top_k=1), torch.Generator().manual_seed(0),
                        hooks := _LookAhead())
    torch.testing.assert_close(hooks.estimates[0], greedy.f_hat, atol=1e-5, rtol=0)


class _PinnedLookAhead(_LookAhead):
    """Pins random tokens at every scale and runs the look-ahead with those pins."""

    def __init__(self, tok, B):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.pins = [(torch.randint(0, tok.cfg.vocab_size, (B, p * p), generator=g),
                      torch.rand(B, p * p, generator=g) < 0.5) for p in tok.patch_nums]

    def pinned(self, si):
        return self.pins[si]

    def on_logits(self, si, p, logits_BlV, f_hat_BChw):
        first = torch.where(self.pins[si][1], self.pins[si][0], logits_BlV.argmax(-1))
        self.estimates.append(complete_scales(self.state, si, f_hat_BChw, first,
                                              pinned=lambda sj, f_hat: self.pins[sj]))
        return logits_BlV


@pytest.mark.parametrize("kind", ["causal", "markov"])
def test_look_ahead_puts_in_the_pinned_tokens_of_later_scales(setup, kind):
    """The estimate is the image the loop will decode: with greedy draws and pinned (e.g. clamped)
    tokens, the look-ahead from the first scale equals the final latent."""
    tok, _ = setup
    model = _model(tok, kind)
    labels = torch.tensor([0, 3, 5])
    settings = ScaleSettings(cfg=1.5, top_k=1)
    hooks = _PinnedLookAhead(tok, 3)
    out = run_scales(model, tok, labels, settings, torch.Generator().manual_seed(0), hooks)
    torch.testing.assert_close(hooks.estimates[0], out.f_hat, atol=1e-5, rtol=0)
    unpinned = _LookAhead()
    run_scales(model, tok, labels, settings, torch.Generator().manual_seed(0), unpinned)
    assert not torch.allclose(unpinned.estimates[0], out.f_hat, atol=1e-3)


class _AllLikeRowZero(ScaleHooks):
    def reorder(self, si):
        return torch.zeros(3, dtype=torch.long) if si == 1 else None


@pytest.mark.parametrize("kind", ["causal", "markov_prev"])
def test_reordering_moves_the_cache_with_the_rows(setup, kind):
    """After every row becomes a copy of row 0, greedy sampling gives row 0's image everywhere."""
    tok, _ = setup
    model = _model(tok, kind)
    labels = torch.tensor([4, 4, 4])
    settings = ScaleSettings(cfg=1.5, top_k=1)
    plain = run_scales(model, tok, torch.tensor([4, 7, 9]), settings, torch.Generator().manual_seed(0))
    copied = run_scales(model, tok, torch.tensor([4, 7, 9]), settings, torch.Generator().manual_seed(0),
                        _AllLikeRowZero())
    for row in range(3):
        torch.testing.assert_close(copied.images[row], plain.images[0], atol=1e-5, rtol=0)
    del labels


def test_lowest_scores_picks_the_least_likely_free_tokens():
    s = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.3, 0.2, 0.1, 0.0]])
    keep = torch.tensor([[False, True, False, False], [False, False, False, False]])
    low = lowest_scores(s, 0.5, keep)
    assert low.tolist() == [[False, False, True, True], [False, False, True, True]]
    assert lowest_scores(s, 1.0, keep)[0].tolist() == [True, False, True, True]


# ----------------------------------------------------------------------------- custom operators


def _nonlinear_sensor(x):
    """A test-only operator: blur, 2x downsampling, then a saturating response."""
    return torch.tanh(2.0 * F.avg_pool2d(x, 2))


def test_a_custom_callable_operator_works_end_to_end(setup):
    tok, x = setup
    model = _model(tok, "markov")
    y = _nonlinear_sensor(x) + 0.01 * torch.randn(_nonlinear_sensor(x).shape, generator=torch.Generator().manual_seed(0))
    meas = MeasurementModel(_nonlinear_sensor, sigma_y=0.01)
    cfg = PosteriorGuidanceConfig(guide_from_scale=1, grad_steps=4, particles=2)
    res = restore_methods(model, tok, meas, y, ["prior", "guided", "guided_mean"], cfg, seed=0)
    c = {m: meas.residual_norm(r.images, y) for m, r in res.items()}
    assert c["guided"].mean() < 0.6 * c["prior"].mean()
    assert res["guided_mean"].images.shape == x.shape
    with pytest.raises(ValueError, match="clamping needs"):  # no hints: no clamping
        GradientGuidedSampler(model, tok, meas, cfg).sample(y, clamp=True)
    with pytest.raises(ValueError, match="exact pseudo-inverse"):
        meas.project(res["guided"].images, y)
    hinted = MeasurementModel(_nonlinear_sensor, sigma_y=0.01, band=0.5,
                              pinv=lambda yy: F.interpolate(torch.atanh(yy.clamp(-0.99, 0.99)) / 2, scale_factor=2))
    out = GradientGuidedSampler(model, tok, hinted, cfg).sample(y, clamp=True, seed=0)
    assert out.images.shape == x.shape


def test_bad_operator_outputs_are_named(setup):
    tok, x = setup
    model = _model(tok, "markov")
    y = F.avg_pool2d(x, 2)
    cfg = PosteriorGuidanceConfig(guide_from_scale=1, particles=1)
    wrong = MeasurementModel(lambda im: F.avg_pool2d(im, 4), sigma_y=0.05)
    with pytest.raises(ValueError, match=r"maps images .* but y has shape"):
        GradientGuidedSampler(model, tok, wrong, cfg).sample(y)
    not_a_tensor = MeasurementModel(lambda im: im.tolist(), sigma_y=0.05)
    with pytest.raises(TypeError, match="returned list"):
        GradientGuidedSampler(model, tok, not_a_tensor, cfg).sample(y)
    with pytest.raises(TypeError, match="callable"):
        MeasurementModel("blur", sigma_y=0.05)
    with pytest.raises(ValueError, match="sigma_y"):
        MeasurementModel(lambda im: im, sigma_y=0.0)
    with pytest.raises(TypeError, match="MeasurementModel"):
        GradientGuidedSampler(model, tok, lambda im: im, cfg)


# ----------------------------------------------------------------------------- data consistency, presets


def test_data_consistency_projection_fits_y_exactly_on_masks_and_superres(setup):
    tok, x = setup
    for kind, st in (("box_inpaint", {"size": 6}), ("superres", {"factor": 2, "mode": "area"})):
        op = build_operator(kind, st, x.shape[-1], x.shape[1])
        y = op(x * 0.5)  # inside [-1, 1] after the projection
        meas = MeasurementModel(op, 0.05)
        guess = torch.zeros_like(x)
        proj = meas.project(guess, y)
        torch.testing.assert_close(op(proj), y, atol=1e-5, rtol=0)
    blur = build_operator("gaussian_blur", {"kernel_size": 5, "sigma": 1.0}, x.shape[-1], x.shape[1])
    assert applicable_methods(["guided", "guided+dc"], blur) == (["guided"], ["guided+dc"])


def test_presets_and_their_errors():
    fast = guidance_config({"preset": "fast"})
    assert fast.preset == "fast" and fast.grad_steps == PRESETS["fast"]["grad_steps"]
    tuned = guidance_config({"preset": "default", "particles": 4, "alpha": "1e-1"}, "params.yaml: reconstruct.guidance")
    assert tuned.particles == 4 and tuned.alpha == 0.1 and tuned.grad_steps == PosteriorGuidanceConfig().grad_steps
    with pytest.raises(ConfigError, match="reconstruct.guidance.particles: expected an integer"):
        guidance_config({"particles": "four"}, "params.yaml: reconstruct.guidance")
    with pytest.raises(ConfigError, match="preset='quick' is unknown"):
        guidance_config({"preset": "quick"})
    with pytest.raises(ConfigError, match="alpah"):
        guidance_config({"alpah": 1.0})
    with pytest.raises(ConfigError, match="particles must be >= 1"):
        PosteriorGuidanceConfig(particles=0)
    with pytest.raises(ConfigError, match="tau must be > 0"):
        PosteriorGuidanceConfig(tau=0)


def test_operator_kind_settings_sit_between_the_preset_and_explicit_values(monkeypatch):
    monkeypatch.setitem(guidance_config_module.KIND_PRESETS, "fast", {"outpaint": {"grad_steps": 3, "temperature": 0.5}})
    kind = guidance_config({"preset": "fast"}, operator_kind="outpaint")
    assert kind.grad_steps == 3 and kind.temperature == 0.5 and kind.clamp == PRESETS["fast"].get("clamp", True)
    other = guidance_config({"preset": "fast"}, operator_kind="superres")  # another kind: the preset alone
    assert other.grad_steps == PRESETS["fast"]["grad_steps"] and other.temperature == 1.0
    assert guidance_config({"preset": "fast", "grad_steps": 7}, operator_kind="outpaint").grad_steps == 7  # explicit wins
    assert guidance_config({"preset": "fast"}).grad_steps == PRESETS["fast"]["grad_steps"]  # no kind given
    for preset, kinds in KIND_PRESETS.items():  # the shipped per-kind settings are valid configs
        assert preset in PRESETS
        for kind_name in kinds:
            guidance_config({"preset": preset}, operator_kind=kind_name)


def test_operator_settings_select_their_own_changes_over_the_kinds(monkeypatch):
    for preset, kinds in guidance_config_module.SETTING_PRESETS.items():  # the shipped changes are valid configs
        assert preset in PRESETS
        for kind_name, entries in kinds.items():
            for name, value in entries:
                guidance_config({"preset": preset}, operator_kind=kind_name, operator_settings={name: value})
    monkeypatch.setitem(guidance_config_module.KIND_PRESETS, "default", {"superres": {"alpha": 1.0, "grad_steps": 5}})
    monkeypatch.setitem(guidance_config_module.SETTING_PRESETS, "default", {"superres": {("factor", 2): {"alpha": 0.1}}})
    x2 = guidance_config({}, operator_kind="superres", operator_settings={"factor": 2, "mode": "area"})
    x4 = guidance_config({}, operator_kind="superres", operator_settings={"factor": 4, "mode": "area"})
    assert (x2.alpha, x2.grad_steps) == (0.1, 5) and (x4.alpha, x4.grad_steps) == (1.0, 5)  # the kind's stay
    assert guidance_config({}, operator_kind="superres").alpha == 1.0  # settings not given: the kind's alone
    assert guidance_config({"alpha": 0.7}, operator_kind="superres", operator_settings={"factor": 2}).alpha == 0.7
    assert guidance_config({}, operator_kind="outpaint", operator_settings={"factor": 2}).alpha == \
        PosteriorGuidanceConfig().alpha  # another kind's entries never apply


def test_warm_up_leaves_the_restorations_unchanged(setup):
    tok, x = setup
    model = _model(tok, "markov")
    op = build_operator("random_inpaint", {"ratio": 0.5}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    y = op.measure(x, 0.05, torch.Generator().manual_seed(0))
    cfg = PosteriorGuidanceConfig(guide_from_scale=2, grad_steps=2)
    cold = restore_methods(model, tok, op, y, ["prior", "clamp", "guided"], cfg, batch_size=4, seed=5)
    warm = restore_methods(model, tok, op, y, ["prior", "clamp", "guided"], cfg, batch_size=4, seed=5, warmup=True)
    for m in cold:
        assert torch.equal(cold[m].images, warm[m].images), m


# ----------------------------------------------------------------------------- clamping inside guidance


def _known_tokens_held(res, plan_tokens, si) -> bool:
    tokens, known = plan_tokens[si]
    return bool(torch.equal(res.tokens[si].flatten(1)[known], tokens[known]))


@pytest.mark.parametrize("kind", ["causal", "markov"])
def test_guided_clamping_holds_the_known_tokens_of_the_scales_it_covers(setup, kind):
    """``clamp: true`` makes ``guided`` a clamped run (with ``clamp_scales: all``, the same draws as
    the ``clamp+guided`` method); ``clamp_scales: unguided`` (the default) holds the observation's
    tokens on the unguided scales only and lets guidance decide the guided ones; without
    ``clamp``, nothing is held."""
    from scalewise.posterior.clamp import clamp_plan
    tok, x = setup
    model = _model(tok, kind)
    op = build_operator("box_inpaint", {"size": 6}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    y = op.measure(x, 0.05, torch.Generator().manual_seed(0))
    plan = clamp_plan(tok, op, y)
    K, g = len(tok.patch_nums), 2
    base = dict(guide_from_scale=g, grad_steps=3, particles=1, stop_at_noise=0.0, alpha=5.0)
    both = make_sampler(model, tok, op, PosteriorGuidanceConfig(**base)).sample(y, clamp=True, seed=2)
    via_config = make_sampler(model, tok, op, PosteriorGuidanceConfig(**base, clamp=True, clamp_scales="all"))
    via_config = via_config.sample(y, seed=2)
    assert torch.equal(both.images, via_config.images)
    assert all(_known_tokens_held(both, plan, si) for si in range(K))
    coarse = make_sampler(model, tok, op, PosteriorGuidanceConfig(**base, clamp=True, clamp_scales="unguided"))
    res = coarse.sample(y, seed=2)
    assert all(_known_tokens_held(res, plan, si) for si in range(g))
    assert not all(_known_tokens_held(res, plan, si) for si in range(g, K))
    free = make_sampler(model, tok, op, PosteriorGuidanceConfig(**base, clamp=False)).sample(y, seed=2)
    assert not all(_known_tokens_held(free, plan, si) for si in range(g))
    with pytest.raises(ConfigError, match="clamp_scales"):
        PosteriorGuidanceConfig(clamp_scales="fine")
