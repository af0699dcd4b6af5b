"""Settings of gradient-guided posterior sampling (``params.yaml: reconstruct.guidance``).

The data term is the Gaussian log-likelihood ``||A(x) - y||^2 / (2 sigma_y^2)`` of the
full-image estimate; ``alpha`` scales its gradient (1 = the exact first-order tilt of the
token distribution). ``presets`` name tested combinations: ``default`` (the pipeline's) and
``fast`` (about 3-4x the time of unguided sampling), each with per-operator-kind changes
(:data:`KIND_PRESETS`, applied when the caller names the operator's kind).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scalewise.core.config import ConfigError, check_choice, from_dict
from scalewise.posterior.clamp import CLAMP_FILLS, CLAMP_MODES, CLAMP_SCALES
from scalewise.posterior.relax import RELAXATIONS
from scalewise.sampling.loop import ScaleSettings
from scalewise.sampling.logits import CFG_SCHEDULES, check_sampling_args
from scalewise.sampling.resample import RESAMPLE_KINDS, RESAMPLE_SELECT, Resample

ALPHA_SCHEDULES = ("constant", "increasing", "decreasing")
STEP_SCHEDULES = ("constant", "increasing")
GRAD_WRT = ("probs", "logits")
ESTIMATES = ("complete", "partial")
POSTERIOR_RESAMPLE = tuple(k for k in RESAMPLE_KINDS if k != "none")


@dataclass
class PosteriorGuidanceConfig:
    """Settings of :class:`~scalewise.posterior.guidance.GradientGuidedSampler`."""

    preset: str = "custom"  # informational: the preset these settings came from (see PRESETS)
    cfg: float = 1.5  # classifier-free guidance (only with class labels)
    cfg_schedule: str = "linear"
    alpha: float = 1.0  # gradient scale of the log-likelihood (1 = exact first-order tilt)
    alpha_schedule: str = "constant"  # constant | increasing | decreasing over the scales
    grad_steps: int = 9  # re-linearised gradient steps per guided scale
    step_schedule: str = "constant"  # constant | increasing: 1 step at guide_from_scale up to grad_steps at the last
    stop_at_noise: float = 1.0  # stop a scale's steps once ||A(x0) - y|| <= this x the noise norm (0 = never)
    estimate: str = "complete"  # complete: full-image estimate (argmax look-ahead) | partial: D(f_hat_<=k)
    grad_clip: float = 0.0  # per-sample max norm of a logit update (0 = off)
    relax: str = "gumbel"  # gumbel | straight_through
    grad_wrt: str = "probs"  # probs: first-order posterior tilt of the logits | logits: chain rule through softmax
    tau: float = 1.0  # Gumbel-softmax / straight-through temperature
    dps_norm: bool = False  # legacy DPS step: divide by ||r|| instead of weighting by 1/(2 sigma_y^2)
    low_band_weight: float = 1.0
    high_band_weight: float = 0.0
    filter: bool = False  # frequency-aware filtering of coarse scales (for estimate: partial)
    guide_from_scale: int = 5  # first scale (0-based) that is guided; coarser ones come from the prior
    top_k: int = 0
    top_p: float = 0.0
    temperature: float = 1.0
    resample: str = "masked"  # simple | masked (needs a model trained with masked_objective)
    resample_select: str = "lowest"  # threshold | lowest (masked: re-mask the lowest guided-probability tokens)
    resample_fraction: float = 0.25  # resample_select lowest: share of a scale's tokens re-masked per iteration
    resample_threshold: float = 0.05  # resample_select threshold: tokens below this probability
    resample_iters: int = 0  # 0 = off
    resample_from_scale: int = 0
    particles: int = 1  # N samples per measurement (SMC between scales); guided = best, guided_mean = mean
    particle_temperature: float = 0.0  # lambda: weights exp(-lambda ||A(x0) - y||^2 / (2 sigma_y^2)); 0 = no resampling
    ess_threshold: float = 0.5  # resample particles when the effective sample size < this x N
    clamp_known: float = 0.5  # clamp: a token is known when this fraction of its footprint is observed
    clamp_min_observed: int = 8  # clamp: ... or when its footprint holds this many observed pixels (0 = off)
    clamp: bool = True  # guided also clamps the known tokens, where the operator has them (masks, SR, deblur)
    clamp_scales: str = "unguided"  # unguided: clamping holds the scales guidance leaves alone | all: every scale
    clamp_mode: str = "encoded"  # encoded: the observation's own tokens (VAR) | residual: re-quantised given the sample's coarser scales
    clamp_fill: str = "biharmonic"  # how a mask's unobserved pixels are filled before encoding: biharmonic | harmonic (batched, faster)
    track_loss: bool = False  # also measure each scale's loss after its updates (one more decode per scale)

    def __post_init__(self) -> None:
        check_sampling_args(self.cfg, self.top_k, self.top_p, self.temperature)
        for name, allowed in (("cfg_schedule", CFG_SCHEDULES), ("alpha_schedule", ALPHA_SCHEDULES),
                              ("step_schedule", STEP_SCHEDULES), ("estimate", ESTIMATES),
                              ("relax", RELAXATIONS), ("grad_wrt", GRAD_WRT), ("resample", POSTERIOR_RESAMPLE),
                              ("resample_select", RESAMPLE_SELECT), ("clamp_mode", CLAMP_MODES),
                              ("clamp_scales", CLAMP_SCALES), ("clamp_fill", CLAMP_FILLS), ("preset", tuple(PRESETS) + ("custom",))):
            check_choice(name, getattr(self, name), allowed)
        for name in ("alpha", "grad_steps", "grad_clip", "stop_at_noise", "resample_iters", "resample_from_scale",
                     "guide_from_scale", "particle_temperature", "clamp_min_observed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.tau <= 0:
            raise ConfigError(f"tau must be > 0, got {self.tau}")
        if self.particles < 1:
            raise ConfigError(f"particles must be >= 1, got {self.particles}")
        for name in ("clamp_known", "resample_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must lie in (0, 1], got {getattr(self, name)}")
        for name in ("resample_threshold", "ess_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.resample_select == "lowest" and self.resample == "simple" and self.resample_iters > 0:
            raise ConfigError("resample_select: lowest needs resample: masked; use resample_select: threshold")

    def resampling(self) -> Resample:
        """The loop's token resampling: off when ``resample_iters`` is 0."""
        on = self.resample_iters > 0 and (self.resample_select == "lowest" or self.resample_threshold > 0)
        return Resample(kind=self.resample if on else "none", threshold=self.resample_threshold,
                        iters=self.resample_iters, min_scale=self.resample_from_scale,
                        select=self.resample_select, fraction=self.resample_fraction)

    def sampling(self, conditional: bool) -> ScaleSettings:
        """The loop's settings; CFG only with class labels (``conditional``)."""
        return ScaleSettings(self.cfg if conditional else 0.0, self.cfg_schedule, self.top_k, self.top_p,
                             self.temperature, self.resampling())

    def alpha_at(self, si: int, num_scales: int) -> float:
        """Gradient scale of scale ``si``: constant, rising to ``alpha`` or falling from it."""
        if si < self.guide_from_scale:
            return 0.0
        if self.alpha_schedule == "increasing":
            return self.alpha * (si + 1) / num_scales
        if self.alpha_schedule == "decreasing":
            return self.alpha * (num_scales - si) / num_scales
        return self.alpha

    def steps_at(self, si: int, num_scales: int) -> int:
        """Gradient steps of scale ``si``: ``grad_steps`` (constant) or rising linearly from 1 to it."""
        if si < self.guide_from_scale or self.grad_steps == 0:
            return 0
        if self.step_schedule == "constant" or num_scales - 1 <= self.guide_from_scale:
            return self.grad_steps
        frac = (si - self.guide_from_scale) / (num_scales - 1 - self.guide_from_scale)
        return max(1, round(1 + frac * (self.grad_steps - 1)))


# Tuned on the validation subset (data/degraded/validation) of the default profile; see the README
# and benchmarks/posterior_tuning.md.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},  # the dataclass defaults: 1 particle, scales 0..4 clamped, 5..6 guided with 9 steps each
    "fast": {"guide_from_scale": 5, "grad_steps": 1, "step_schedule": "constant", "resample_iters": 0,
             "particles": 1, "clamp": True, "clamp_scales": "all", "clamp_fill": "harmonic"},
    # one step on each of the last two scales, every known token clamped, the batched fill (about 3-4x)
}

# Per operator kind, changes a preset makes on top of its own values (same validation sweep).
# ``alpha`` is the step of each re-linearised update: with the likelihood weighted by
# 1/(2 sigma_y^2), alpha 1 jumps far beyond where the linearisation holds on the mask and blur
# operators, and a smaller step taken 9 times fits better (benchmarks/posterior_tuning.md §10).
KIND_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {
        # the unseen half is a sample: a cooler prior raised PSNR and lowered FID (guided and clamp alike)
        "outpaint": {"temperature": 0.5, "alpha": 0.02},
        "box_inpaint": {"alpha": 0.03},
        # one mask per image: scikit-image's fill alone costs about 4x a prior sample; harmonic 0.4 ms/img
        "random_inpaint": {"clamp_fill": "harmonic", "alpha": 0.1},
        "gaussian_blur": {"alpha": 0.1},
        # superres keeps alpha 1 at factor 4; factor 2 takes 0.1 (SETTING_PRESETS)
    },
    "fast": {
        "random_inpaint": {"guide_from_scale": 6, "grad_steps": 2, "alpha": 0.01},  # 2 small steps on the last scale
        # every known token held, 2 small steps on the last scale: above clamp at about 3x
        "outpaint": {"guide_from_scale": 6, "grad_steps": 2, "alpha": 0.01, "temperature": 0.5},
        "gaussian_blur": {"alpha": 0.03},
        # one box for the whole batch: the biharmonic fill is one factorisation, and its tokens clamp better
        # (margin over clamp +0.55 / +0.57 dB against +0.30 / +0.28 with the harmonic fill; outpainting lost 0.1-0.2)
        "box_inpaint": {"clamp_fill": "biharmonic"},
    },
}


# Per operator setting, changes on top of the kind's: {preset: {kind: {(setting, value): changes}}}.
# The two super-resolution factors share one kind and disagree on the step (benchmarks/posterior_tuning.md, sections 10-11).
SETTING_PRESETS: dict[str, dict[str, dict[tuple[str, Any], dict[str, Any]]]] = {
    "default": {
        "superres": {("factor", 2): {"alpha": 0.1}},  # factor 4 keeps 1: 0.1 cost it 0.8-1.0 dB
    },
}


def preset_values(preset: str, operator_kind: str | None = None,
                  operator_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """A preset's settings for an operator of ``operator_kind`` (None: the kind-independent ones).

    ``operator_settings`` (the operator's own, e.g. ``{"factor": 2}``) selects the entries of
    :data:`SETTING_PRESETS` that match it; they override the kind's.
    """
    values = {**PRESETS.get(preset, {}), **KIND_PRESETS.get(preset, {}).get(operator_kind or "", {})}
    for (name, value), changes in SETTING_PRESETS.get(preset, {}).get(operator_kind or "", {}).items():
        if (operator_settings or {}).get(name) == value:
            values.update(changes)
    return values


def guidance_config(values: dict[str, Any] | None = None, where: str = "guidance",
                    operator_kind: str | None = None,
                    operator_settings: dict[str, Any] | None = None) -> PosteriorGuidanceConfig:
    """A config from ``values`` laid over its ``preset`` (``default`` when absent).

    The preset's settings for ``operator_kind`` (e.g. ``outpaint``, see :data:`KIND_PRESETS`)
    and for ``operator_settings`` (e.g. a super-resolution ``factor``, :data:`SETTING_PRESETS`)
    come between the preset and ``values``: a value set explicitly always wins. Values are
    type-checked and coerced like every params section; ``where`` names the section in errors
    (e.g. ``params.yaml: reconstruct.guidance``).
    """
    values = dict(values or {})
    preset = values.setdefault("preset", "default")
    if preset not in PRESETS and preset != "custom":
        raise ConfigError(f"{where}: preset={preset!r} is unknown; allowed: {list(PRESETS)} or 'custom'")
    return from_dict(PosteriorGuidanceConfig,
                     {**preset_values(preset, operator_kind, operator_settings), **values}, where)
