"""Gradient-guided posterior sampling through the scales, and the zero-shot clamp baseline.

At every scale k the sampler computes the (CFG-combined) logits of scale k, relaxes them to
soft tokens (Gumbel-softmax or straight-through, :mod:`.relax`), decodes the coarse estimate
``x_hat_k = D(f_hat_{<k} + phi(up(soft_k)))`` from the already-sampled coarser scales plus
the soft current scale, measures the filtered residual ``F_k(A(x_hat_k) - y)``, and moves the
logits (only the logits: the transformer is not differentiated) down the gradient of that
loss, ``grad_steps`` times. Then it samples scale k's tokens from the updated logits and goes
on, as in unguided sampling. With ``dps_norm`` the step is divided by each sample's own
residual norm (DPS, Chung et al. 2023): the update is ``alpha_k * grad ||r_b||``.

``clamp`` (VAR-style zero-shot editing, :mod:`.clamp`) teacher-forces, at every scale, the
tokens of the encoded observation where they are known. ``clamp`` and guidance combine
(``clamp+guided``).

The scales run through the sampling loop of plain generation
(:func:`scalewise.sampling.loop.run_scales`): guidance is its ``on_logits`` hook, clamping its
``on_tokens`` hook, and token resampling (``resample``: simple or masked, from scale 0 on) is
the loop's own. Masked resampling re-predicts low-probability tokens with the model alone
(the guidance tilts each scale's first prediction), and clamped tokens override resampled
ones. Per scale, random numbers are drawn in this order: the Gumbel noise of the guidance
(guided scales only), the draw, the resampling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from scalewise.core.config import check_choice
from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import ScaleTransformer
from scalewise.posterior.clamp import clamp_plan, clamp_tokens
from scalewise.posterior.filters import FrequencyAwareFilter
from scalewise.posterior.measurements import Operator
from scalewise.posterior.relax import RELAXATIONS, gumbel_noise, relaxed_tokens
from scalewise.sampling.logits import CFG_SCHEDULES, check_sampling_args
from scalewise.sampling.loop import ScaleHooks, ScaleSettings, run_scales
from scalewise.sampling.resample import RESAMPLE_KINDS, Resample
from scalewise.sampling.runner import check_pair

ALPHA_SCHEDULES = ("constant", "increasing", "decreasing")
GRAD_WRT = ("probs", "logits")
METHODS = ("prior", "clamp", "guided", "clamp+guided")
POSTERIOR_RESAMPLE = tuple(k for k in RESAMPLE_KINDS if k != "none")


@dataclass
class PosteriorGuidanceConfig:
    """Settings of :class:`GradientGuidedSampler` (params: ``reconstruct.guidance``)."""

    cfg: float = 1.5  # classifier-free guidance (only with class labels)
    cfg_schedule: str = "linear"
    alpha: float = 300.0  # gradient scale (tuned on mnist5k; see the README)
    alpha_schedule: str = "constant"  # constant | increasing | decreasing over the scales
    grad_steps: int = 1  # gradient steps on each scale's logits
    grad_clip: float = 0.0  # per-sample max norm of a logit update (0 = off)
    relax: str = "gumbel"  # gumbel | straight_through
    grad_wrt: str = "probs"  # probs: first-order posterior tilt of the logits | logits: chain rule through softmax
    tau: float = 1.0  # Gumbel-softmax / straight-through temperature
    dps_norm: bool = True  # divide by each sample's residual norm
    low_band_weight: float = 1.0
    high_band_weight: float = 0.0
    filter: bool = True  # frequency-aware filtering of coarse scales
    guide_from_scale: int = 4  # first scale (0-based) that is guided; coarser ones come from the prior
    top_k: int = 0
    top_p: float = 0.0
    temperature: float = 1.0
    resample: str = "simple"  # simple | masked (needs a model trained with masked_objective)
    resample_threshold: float = 0.0  # resample tokens below this probability, from scale 0 on (0 = off)
    resample_iters: int = 0  # 0 = off
    clamp_known: float = 0.5  # clamp: a token is known when this fraction of its footprint is observed
    track_loss: bool = False  # also measure each scale's loss after its update (one more decode per scale)

    def __post_init__(self) -> None:
        check_sampling_args(self.cfg, self.top_k, self.top_p, self.temperature)
        for name, allowed in (("cfg_schedule", CFG_SCHEDULES), ("alpha_schedule", ALPHA_SCHEDULES),
                              ("relax", RELAXATIONS), ("grad_wrt", GRAD_WRT), ("resample", POSTERIOR_RESAMPLE)):
            check_choice(name, getattr(self, name), allowed)
        if self.alpha < 0 or self.grad_steps < 0 or self.grad_clip < 0 or self.tau <= 0:
            raise ValueError("alpha, grad_steps and grad_clip must be >= 0 and tau > 0")
        if not 0.0 < self.clamp_known <= 1.0:
            raise ValueError(f"clamp_known must lie in (0, 1], got {self.clamp_known}")
        if not 0.0 <= self.resample_threshold <= 1.0 or self.resample_iters < 0:
            raise ValueError(f"resample_threshold must lie in [0, 1] and resample_iters be >= 0, "
                             f"got {self.resample_threshold} and {self.resample_iters}")

    def resampling(self) -> Resample:
        """The loop's token resampling: off when ``resample_threshold`` or ``resample_iters`` is 0."""
        on = self.resample_threshold > 0 and self.resample_iters > 0
        return Resample(kind=self.resample if on else "none", threshold=self.resample_threshold,
                        iters=self.resample_iters, min_scale=0)

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


class MeasurementModel:
    """``y = A(x) + noise`` with a frequency-aware filter: the per-scale guidance loss."""

    def __init__(self, operator: Operator, filter: FrequencyAwareFilter | None = None,
                 low_band_weight: float = 1.0, high_band_weight: float = 0.0):
        self.operator = operator
        self.filter = filter
        self.low_band_weight = low_band_weight
        self.high_band_weight = high_band_weight

    def residual(self, x_BCHW: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.operator(x_BCHW) - y

    def residual_norm(self, x_BCHW: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``||A(x) - y||`` per sample (B,), full band."""
        return self.residual(x_BCHW, y).flatten(1).norm(dim=1)

    def loss(self, x_BCHW: torch.Tensor, y: torch.Tensor, si: int) -> torch.Tensor:
        """Weighted squared norm of the filtered residual at scale ``si``, per sample (B,)."""
        r = self.residual(x_BCHW, y)
        if self.filter is None:
            return r.flatten(1).pow(2).sum(1)
        low, high = self.filter.split(r, si)
        # area-averaging shrinks a band's energy by the pixel ratio: restore it
        ratio = r[0].numel() / low[0].numel()
        out = self.low_band_weight * ratio * low.flatten(1).pow(2).sum(1)
        if self.high_band_weight:
            out = out + self.high_band_weight * high.flatten(1).pow(2).sum(1)
        return out


@dataclass
class PosteriorSample:
    images: torch.Tensor  # (B, C, H, W) in [-1, 1]
    tokens: list[torch.Tensor]  # K index maps (B, p_k, p_k)
    loss_by_scale: list[torch.Tensor]  # guidance loss per scale before/after the update: (2, B)
    seconds: float = 0.0
    resample_iters: list[int] = field(default_factory=list)  # resampling iterations run per scale


class GradientGuidedSampler:
    """Posterior sampling ``x ~ p(x | y)`` with a trained transformer + tokenizer.

    Works with any mask kind (VAR ``causal``, SRDD ``markov``/``markov_prev``); batched, with
    a per-sample residual norm.
    """

    def __init__(self, model: ScaleTransformer, tokenizer: Tokenizer, measurement: MeasurementModel,
                 config: PosteriorGuidanceConfig | None = None):
        check_pair(model, tokenizer)
        self.config = config or PosteriorGuidanceConfig()
        self.config.resampling().check_model(model)
        self.model, self.tokenizer = model.eval(), tokenizer.eval()
        self.measurement = measurement

    def sample(self, y: torch.Tensor, labels: torch.Tensor | list[int] | None = None, guided: bool = True,
               clamp: bool = False, seed: int = 0) -> PosteriorSample:
        """Restore a batch from its measurements ``y`` (B, ...).

        Args:
            labels: class indices (B,), or None for unconditional sampling (null class, no CFG).
            guided: apply the gradient guidance (False = the prior, or clamp alone).
            clamp: teacher-force the observation's known tokens (zero-shot baseline).
        Returns: a :class:`PosteriorSample` (images in [-1, 1], (B, C, H, W)).
        """
        model, cfg = self.model, self.config
        op = self.measurement.operator
        op.check_y(y)
        device = next(model.parameters()).device
        B, K = y.shape[0], len(model.cfg.patch_nums)
        if guided and cfg.grad_steps > 0 and cfg.alpha > 0 and cfg.guide_from_scale >= K:
            raise ValueError(f"guide_from_scale={cfg.guide_from_scale} but the model has {K} scales (0..{K - 1}): "
                             "nothing would be guided; lower guide_from_scale")
        if labels is None:
            labels_B = torch.full((B,), model.num_classes, dtype=torch.long, device=device)
        else:
            labels_B = torch.as_tensor(labels, dtype=torch.long, device=device).flatten()
            if labels_B.numel() != B:
                raise ValueError(f"got {labels_B.numel()} labels for {B} measurements")
        gen = torch.Generator(device=device).manual_seed(seed)
        plan = clamp_plan(self.tokenizer, op, y, cfg.clamp_known) if clamp else None
        hooks = _GuidanceHooks(self, y, guided, plan, gen)
        t0 = time.perf_counter()
        out = run_scales(model, self.tokenizer, labels_B, cfg.sampling(labels is not None), gen, hooks)
        return PosteriorSample(out.images, out.tokens, hooks.losses, time.perf_counter() - t0, out.resample_iters)

    def _guide(self, logits_BlV: torch.Tensor, f_hat_prev: torch.Tensor, y: torch.Tensor, si: int, p: int,
               alpha: float, gen: torch.Generator, clamped: tuple[torch.Tensor, torch.Tensor] | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``grad_steps`` updates of scale ``si``'s logits; returns (logits, loss before/after (2, B)).

        ``clamped`` (tokens (B, l), known (B, l) bool): the clamp baseline's tokens; the estimate
        then holds them (one-hot) where known, so the free tokens are guided given the clamp.
        """
        cfg, tok, meas = self.config, self.tokenizer, self.measurement
        z = logits_BlV.detach().clone()
        noise = gumbel_noise(z.shape, gen, z.device) if cfg.relax == "gumbel" else None
        fixed = None
        if clamped is not None:
            tokens_Bl, known_Bl = clamped
            fixed = (known_Bl.unsqueeze(-1), F.one_hot(tokens_Bl, z.shape[-1]).to(z.dtype))
        first = last = None
        steps = cfg.grad_steps + (1 if cfg.track_loss else 0)
        for step in range(steps):
            with torch.enable_grad():
                if cfg.grad_wrt == "probs":  # differentiate w.r.t. the token distribution itself
                    probs = wrt = relaxed_tokens(z, cfg.relax, cfg.tau, noise).detach().requires_grad_(True)
                else:  # through the relaxation's softmax (vanishes where the model is confident)
                    z.requires_grad_(True)
                    probs, wrt = relaxed_tokens(z, cfg.relax, cfg.tau, noise), z
                if fixed is not None:
                    probs = torch.where(fixed[0], fixed[1], probs)
                f_k = tok.quantize.add_scale(f_hat_prev, si, tok.quantize.soft_embed(probs, p))
                x_hat = tok.f_to_img(f_k, clamp=False)
                loss_B = meas.loss(x_hat, y, si)
                if step == cfg.grad_steps:  # track_loss: this pass only measures the result
                    last = loss_B.detach()
                    break
                (grad,) = torch.autograd.grad(loss_B.sum(), wrt)
            if first is None:
                first = loss_B.detach()
            if cfg.dps_norm:  # d||r||/dz = d||r||^2/dz / (2 ||r||), per sample
                norm_B = meas.residual_norm(x_hat.detach(), y).clamp_min(1e-8)
                grad = grad / (2 * norm_B.view(-1, 1, 1))
            if cfg.grad_clip > 0:
                gnorm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                grad = grad * (cfg.grad_clip / gnorm).clamp(max=1.0).view(-1, 1, 1)
            z = (z - alpha * grad).detach()
        if last is None:
            last = torch.full_like(first, float("nan"))
        return z.detach(), torch.stack((first, last))


class _GuidanceHooks(ScaleHooks):
    """One batch's guidance (``on_logits``) and clamping (``on_tokens``) in the scale loop."""

    def __init__(self, sampler: GradientGuidedSampler, y: torch.Tensor, guided: bool,
                 plan: list[tuple[torch.Tensor, torch.Tensor]] | None, generator: torch.Generator):
        self.sampler, self.y, self.guided, self.plan, self.generator = sampler, y, guided, plan, generator
        self.num_scales = len(sampler.model.cfg.patch_nums)
        self.losses: list[torch.Tensor] = []  # (2, B) per guided scale

    def on_logits(self, si: int, p: int, logits_BlV: torch.Tensor, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        cfg = self.sampler.config
        alpha = cfg.alpha_at(si, self.num_scales) if self.guided else 0.0
        if alpha <= 0 or cfg.grad_steps == 0:
            return logits_BlV
        logits_BlV, loss_pair = self.sampler._guide(logits_BlV, f_hat_BChw, self.y, si, p, alpha, self.generator,
                                                    None if self.plan is None else self.plan[si])
        self.losses.append(loss_pair)
        return logits_BlV

    def on_tokens(self, si: int, tokens_Bl: torch.Tensor) -> torch.Tensor:
        return tokens_Bl if self.plan is None else clamp_tokens(tokens_Bl, self.plan[si])
