"""Gradient-guided posterior sampling through the scales, and the zero-shot clamp baseline.

At every guided scale k the sampler takes the (CFG-combined) logits ``z`` of scale k and
draws one Gumbel noise ``g``. It relaxes the scale to soft tokens ``softmax((z + g) / tau)``,
builds the **full-image estimate** ``x0 = D(f_hat_{<k} + phi(up(soft_k)) + f_{>k})``, where
``f_{>k}`` completes the scales not yet sampled with the model's most likely tokens
(:func:`scalewise.sampling.complete.complete_scales`; ``estimate: partial`` drops it), and
moves the logits down the gradient of the Gaussian negative log-likelihood
``||A(x0) - y||^2 / (2 sigma_y^2)`` (``alpha`` = 1: the exact first-order tilt of the token
distribution). It re-linearises ``steps_at(k)`` times (more at the fine scales), stopping a
sample's updates once ``||A(x0) - y||`` reaches ``stop_at_noise`` times the noise norm
``sigma_y sqrt(m)``. The token is then drawn from the same perturbed logits the gradient was
taken at: ``argmax(log p'(z') + g)`` (Gumbel-max with the same ``g``).

After the draw, **measurement-aware masked resampling** (``resample: masked``,
``resample_select: lowest``) re-masks the tokens least likely under the guided distribution
(prior x likelihood), re-predicts them with the model's masked objective given the rest
(clamped tokens are revealed and never re-masked) and guides the re-prediction likewise.

With ``particles`` N > 1 every measurement carries N samples; between scales they are
reweighted by the likelihood of their full-image estimates and resampled (:mod:`.particles`).
The result holds the best-consistency particle (``guided``) and the weighted particle mean
(``guided_mean``, an MMSE estimate).

``clamp`` (VAR-style zero-shot editing, :mod:`.clamp`) teacher-forces the observation's known
tokens at every scale; it combines with guidance (``clamp+guided``).

Everything runs inside the sampling loop of plain generation
(:func:`scalewise.sampling.loop.run_scales`) as its hooks. With ``alpha = 0`` (or
``guided=False``) no random number is drawn by the hooks: the result equals prior sampling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import ScaleTransformer
from scalewise.posterior.clamp import ClampPlan, clamp_tokens
from scalewise.posterior.guidance_config import PosteriorGuidanceConfig
from scalewise.posterior.measurement_model import MeasurementModel
from scalewise.posterior.particles import (
    effective_sample_size, flat_ancestors, normalised_weights, systematic_resample, weighted_mean,
)
from scalewise.posterior.relax import gumbel_noise, relaxed_tokens
from scalewise.sampling.complete import complete_scales
from scalewise.sampling.loop import LoopState, ScaleHooks, run_scales
from scalewise.sampling.runner import check_pair

METHODS = ("prior", "clamp", "guided", "clamp+guided")  # sampling runs; restoration adds derived methods


@dataclass
class PosteriorSample:
    images: torch.Tensor  # (B, C, H, W) in [-1, 1]: the best-consistency particle
    mean_images: torch.Tensor  # (B, C, H, W): the weighted particle mean (= images for N = 1)
    tokens: list[torch.Tensor]  # K index maps (B, p_k, p_k) of the best particle
    loss_by_scale: list[torch.Tensor]  # per guided scale: the data term before/after its updates (2, B*N)
    seconds: float = 0.0
    resample_iters: list[int] = field(default_factory=list)  # masked-resampling iterations run per scale
    steps_by_scale: list[int] = field(default_factory=list)  # gradient steps taken per scale (max over samples)
    weights: torch.Tensor | None = None  # (B, N) final particle weights
    particle_images: torch.Tensor | None = None  # (B, N, C, H, W)
    resampled_at: list[int] = field(default_factory=list)  # scales after which the particles were resampled


class GradientGuidedSampler:
    """Posterior sampling ``x ~ p(x | y)`` with a trained transformer + tokenizer.

    Works with any mask kind (VAR ``causal``, SRDD ``markov``/``markov_prev``); batched, with
    per-sample step sizes and stopping.
    """

    def __init__(self, model: ScaleTransformer, tokenizer: Tokenizer, measurement: MeasurementModel,
                 config: PosteriorGuidanceConfig | None = None):
        check_pair(model, tokenizer)
        if not isinstance(measurement, MeasurementModel):
            raise TypeError(f"measurement must be a MeasurementModel (wrap a callable A as MeasurementModel(A, "
                            f"sigma_y=...)), got {type(measurement).__name__}")
        self.config = config or PosteriorGuidanceConfig()
        self.config.resampling().check_model(model)
        self.model, self.tokenizer = model.eval(), tokenizer.eval()
        self.measurement = measurement

    def sample(self, y: torch.Tensor, labels: torch.Tensor | list[int] | None = None, guided: bool = True,
               clamp: bool = False, seed: int = 0,
               on_scale_done: Callable[[int], None] | None = None) -> PosteriorSample:
        """Restore a batch from its measurements ``y`` (B, ...).

        Args:
            labels: class indices (B,), or None for unconditional sampling (null class, no CFG).
            guided: apply the gradient guidance (False = the prior, or clamp alone).
            clamp: teacher-force the observation's known tokens at every scale (the ``clamp`` and
                ``clamp+guided`` methods). Guided runs also clamp when the config says so
                (``clamp``, on the scales of ``clamp_scales``) and the operator can.
            on_scale_done: called with each scale's index once it is sampled (per-scale progress).
        Returns: a :class:`PosteriorSample` (images in [-1, 1], (B, C, H, W)).
        """
        model, cfg, meas = self.model, self.config, self.measurement
        meas.check_y(y)
        device = next(model.parameters()).device
        B, K = y.shape[0], len(model.cfg.patch_nums)
        if guided and cfg.grad_steps > 0 and cfg.alpha > 0 and cfg.guide_from_scale >= K:
            raise ValueError(f"guide_from_scale={cfg.guide_from_scale} but the model has {K} scales (0..{K - 1}): "
                             "nothing would be guided; lower guide_from_scale")
        if clamp and not meas.can_clamp:
            raise ValueError("clamping needs the operator's known_mask or band, and a pinv: pass them to "
                             "MeasurementModel(operator, known_mask=..., pinv=...) or use guided alone")
        if labels is None:
            labels_B = torch.full((B,), model.num_classes, dtype=torch.long, device=device)
        else:
            labels_B = torch.as_tensor(labels, dtype=torch.long, device=device).flatten()
            if labels_B.numel() != B:
                raise ValueError(f"got {labels_B.numel()} labels for {B} measurements")
        N = cfg.particles if guided else 1
        rows = torch.arange(B).repeat_interleave(N)
        y_rows = y[rows.to(y.device)]
        meas_rows = meas.select(rows) if N > 1 else meas
        gen = torch.Generator(device=device).manual_seed(seed)
        clamp_scales = "all" if clamp else cfg.clamp_scales  # the clamp methods hold every scale
        clamp = clamp or (guided and cfg.clamp and meas.can_clamp)
        plan = None
        if clamp:
            plan = ClampPlan.build(self.tokenizer, meas, y, cfg.clamp_known, cfg.clamp_min_observed,
                                   cfg.clamp_mode, cfg.clamp_fill).select(rows)
        hooks = _GuidanceHooks(self, meas_rows, y_rows, guided, plan, gen, B, N, clamp_scales)
        t0 = time.perf_counter()
        out = run_scales(model, self.tokenizer, labels_B[rows.to(device)], cfg.sampling(labels is not None), gen, hooks,
                         on_scale_done=on_scale_done)
        images_BN = out.images.view(B, N, *out.images.shape[1:])
        consistency_BN = meas_rows.residual_norm(out.images, y_rows).view(B, N)
        best_B = consistency_BN.argmin(dim=1)
        w_BN = hooks.final_weights(out.f_hat)
        best_rows = best_B + N * torch.arange(B, device=best_B.device)
        return PosteriorSample(
            images=images_BN[torch.arange(B), best_B], mean_images=weighted_mean(images_BN, w_BN.to(images_BN)),
            tokens=[t[best_rows] for t in out.tokens], loss_by_scale=hooks.losses,
            seconds=time.perf_counter() - t0, resample_iters=out.resample_iters, steps_by_scale=hooks.steps,
            weights=w_BN, particle_images=images_BN, resampled_at=hooks.resampled_at)


class _GuidanceHooks(ScaleHooks):
    """One batch's guidance, draws, clamping and particle resampling in the scale loop."""

    def __init__(self, sampler: GradientGuidedSampler, meas: MeasurementModel, y: torch.Tensor, guided: bool,
                 plan: ClampPlan | None, generator: torch.Generator, B: int, N: int, clamp_scales: str = "all"):
        self.sampler, self.meas, self.y, self.guided, self.plan = sampler, meas, y, guided, plan
        self.clamp_scales = clamp_scales
        self.generator, self.B, self.N = generator, B, N
        self.cfg = sampler.config
        self.num_scales = len(sampler.model.cfg.patch_nums)
        self.noise_norm = meas.noise_norm(y)  # (B*N,)
        self.losses: list[torch.Tensor] = []
        self.steps: list[int] = []
        self.resampled_at: list[int] = []
        self.state: LoopState | None = None
        self.noise: torch.Tensor | None = None  # this scale's Gumbel noise (B*N, l, V)
        self.f_prev: torch.Tensor | None = None
        self.tokens: torch.Tensor | None = None
        self.log_w = torch.zeros(B, N, device=y.device)
        self.nll_prev = torch.zeros(B * N, device=y.device)
        self._order: torch.Tensor | None = None
        self.pins: tuple[torch.Tensor, torch.Tensor] | None = None  # this scale's clamped tokens

    def on_bind(self, state: LoopState) -> None:
        self.state = state

    # -- guidance

    def _active(self, si: int) -> bool:
        return (self.guided and self.cfg.alpha_at(si, self.num_scales) > 0
                and self.cfg.steps_at(si, self.num_scales) > 0)

    def on_logits(self, si: int, p: int, logits_BlV: torch.Tensor, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        self.f_prev, self.noise = f_hat_BChw, None
        self.pins = self._pins_at(si, f_hat_BChw)
        if not self._active(si):
            self.steps.append(0)
            return logits_BlV
        self.noise = gumbel_noise(logits_BlV.shape, self.generator, logits_BlV.device)
        fixed = self.pins
        z, pair, steps = self._guide(si, p, logits_BlV, f_hat_BChw, self.noise, fixed,
                                     self.cfg.steps_at(si, self.num_scales))
        self.losses.append(pair)
        self.steps.append(steps)
        return z

    def on_refine_logits(self, si: int, p: int, logits_BlV: torch.Tensor, f_hat_BChw: torch.Tensor,
                         tokens_Bl: torch.Tensor, revealed_Bl: torch.Tensor) -> torch.Tensor:
        if not self._active(si):
            return logits_BlV
        noise = gumbel_noise(logits_BlV.shape, self.generator, logits_BlV.device)
        z, _, _ = self._guide(si, p, logits_BlV, f_hat_BChw, noise, (tokens_Bl, revealed_Bl),
                              max(1, self.cfg.steps_at(si, self.num_scales) // 2))
        return z

    def draw(self, si: int, probs_BlV: torch.Tensor) -> torch.Tensor | None:
        if self.noise is None:
            return None
        return (probs_BlV.clamp_min(1e-30).log() + self.noise).argmax(-1)  # Gumbel-max with the gradient's noise

    def pinned(self, si: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.pins

    def _pins_at(self, si: int, f_hat_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Scale ``si``'s clamped tokens given its latent so far (None: nothing clamped there);
        with ``clamp_scales: unguided``, guidance alone decides the guided scales."""
        if self.plan is None or (self.clamp_scales == "unguided" and self._active(si)):
            return None
        return self.plan.at(si, f_hat_BChw)

    def on_tokens(self, si: int, tokens_Bl: torch.Tensor) -> torch.Tensor:
        tokens_Bl = tokens_Bl if self.pins is None else clamp_tokens(tokens_Bl, self.pins)
        self.tokens = tokens_Bl
        return tokens_Bl

    def _estimate(self, si: int, f_prev: torch.Tensor, probs_BlV: torch.Tensor, p: int,
                  rest: torch.Tensor | None) -> torch.Tensor:
        """The image estimate (B, C, H, W), differentiable in ``probs``."""
        q = self.sampler.tokenizer.quantize
        f_k = q.add_scale(f_prev, si, q.soft_embed(probs_BlV, p))
        if rest is not None:
            f_k = f_k + rest
        return self.sampler.tokenizer.f_to_img(f_k, clamp=False)

    def _rest(self, si: int, f_prev: torch.Tensor, hard_Bl: torch.Tensor) -> torch.Tensor | None:
        """``f_{>si}``: what the look-ahead adds after scale si's ``hard`` tokens (None: partial estimate)."""
        if self.cfg.estimate != "complete" or si == self.num_scales - 1:
            return None
        q, p = self.sampler.tokenizer.quantize, self.sampler.model.cfg.patch_nums[si]
        full = complete_scales(self.state, si, f_prev, hard_Bl, pinned=self._pins_at)
        return full - q.add_scale(f_prev, si, q.embed(hard_Bl.view(-1, p, p)))

    def _guide(self, si: int, p: int, logits_BlV: torch.Tensor, f_prev: torch.Tensor, noise: torch.Tensor,
               fixed: tuple[torch.Tensor, torch.Tensor] | None, steps: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Gradient steps on scale ``si``'s logits; returns (logits, data term before/after (2, B), steps taken).

        ``fixed`` (tokens (B, l), fixed (B, l) bool): positions held at those tokens (one-hot)
        in the estimate and left unchanged (clamped or revealed tokens).
        """
        cfg, meas, y = self.cfg, self.meas, self.y
        alpha = cfg.alpha_at(si, self.num_scales)
        V = logits_BlV.shape[-1]
        z = logits_BlV.detach().clone()
        hold = None
        if fixed is not None:
            hold = (fixed[1].unsqueeze(-1), F.one_hot(fixed[0], V).to(z.dtype))
        active_B = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
        first = last = None
        hard_prev, rest, taken = None, None, 0
        for step in range(steps + (1 if cfg.track_loss else 0)):
            hard = (z + noise).argmax(-1)
            if hold is not None:
                hard = torch.where(fixed[1], fixed[0], hard)
            if cfg.estimate == "complete" and (hard_prev is None or not torch.equal(hard, hard_prev)):
                rest = self._rest(si, f_prev, hard)  # re-linearise around the current sample
                hard_prev = hard
            with torch.enable_grad():
                if cfg.grad_wrt == "probs":  # differentiate w.r.t. the token distribution itself
                    probs = wrt = relaxed_tokens(z, cfg.relax, cfg.tau, noise).detach().requires_grad_(True)
                else:  # through the relaxation's softmax (vanishes where the model is confident)
                    z.requires_grad_(True)
                    probs, wrt = relaxed_tokens(z, cfg.relax, cfg.tau, noise), z
                if hold is not None:
                    probs = torch.where(hold[0], hold[1], probs)
                x0 = self._estimate(si, f_prev, probs, p, rest)
                filt = si if cfg.estimate == "partial" else None
                data_B = meas.squared_residual(x0, y, filt) if cfg.dps_norm else meas.neg_log_likelihood(x0, y, filt)
                if first is None:
                    first = data_B.detach()
                if step == steps:  # track_loss: this pass only measures the result
                    last = data_B.detach()
                    break
                rnorm_B = meas.residual_norm(x0.detach(), y)
                if cfg.stop_at_noise > 0:
                    active_B &= rnorm_B > cfg.stop_at_noise * self.noise_norm
                if not bool(active_B.any()):
                    last = data_B.detach()
                    break
                (grad,) = torch.autograd.grad(data_B.sum(), wrt)
            if cfg.dps_norm:  # legacy DPS step: d||r||/dz = d||r||^2/dz / (2 ||r||), per sample
                grad = grad / (2 * rnorm_B.clamp_min(1e-8).view(-1, 1, 1))
            if cfg.grad_clip > 0:
                gnorm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                grad = grad * (cfg.grad_clip / gnorm).clamp(max=1.0).view(-1, 1, 1)
            grad = grad * active_B.view(-1, 1, 1).to(grad.dtype)
            if hold is not None:
                grad = grad.masked_fill(hold[0], 0.0)
            z = (z.detach() - alpha * grad).detach()
            taken += 1
        if last is None:
            last = torch.full_like(first, float("nan"))
        return z.detach(), torch.stack((first, last)), taken

    # -- particles

    def _particle_nll(self, si: int, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood (B*N,) of each particle's full-image estimate after scale ``si``."""
        if si == self.num_scales - 1:
            full = f_hat_BChw
        else:
            full = complete_scales(self.state, si, self.f_prev, self.tokens, finished=True, pinned=self._pins_at)
        x0 = self.sampler.tokenizer.f_to_img(full, clamp=False)
        return self.meas.neg_log_likelihood(x0, self.y)

    def on_scale_end(self, si: int, f_hat_BChw: torch.Tensor | None = None) -> None:
        self._order = None
        weighted = self.N > 1 and self.cfg.particle_temperature > 0  # lambda 0: uniform weights, no look-ahead
        if not weighted or si == self.num_scales - 1 or not self._active(si):
            return
        nll = self._particle_nll(si, f_hat_BChw)
        self.log_w += -self.cfg.particle_temperature * (nll - self.nll_prev).view(self.B, self.N)
        self.nll_prev = nll
        w = normalised_weights(self.log_w)
        low_B = effective_sample_size(w) < self.cfg.ess_threshold * self.N
        if bool(low_B.any()):  # resample the groups whose weights degenerated; keep the others as they are
            ancestors = systematic_resample(w, self.generator)
            keep = torch.arange(self.N, device=w.device).expand_as(ancestors)
            order = flat_ancestors(torch.where(low_B.unsqueeze(1), ancestors, keep))
            self.log_w[low_B] = 0.0
            self.nll_prev = self.nll_prev[order]
            self._order = order
            self.resampled_at.append(si)

    def reorder(self, si: int) -> torch.Tensor | None:
        order, self._order = self._order, None
        if order is not None and self.plan is not None:
            self.plan = self.plan.select(order)
        return order

    def final_weights(self, f_hat_BChw: torch.Tensor | None) -> torch.Tensor:
        """Particle weights (B, N) after the last scale (uniform for N = 1 or ``particle_temperature`` 0)."""
        if self.N == 1 or self.cfg.particle_temperature == 0 or f_hat_BChw is None:
            return torch.ones(self.B, self.N, device=self.y.device) / self.N
        x = self.sampler.tokenizer.f_to_img(f_hat_BChw)  # the images returned, in [-1, 1]
        nll = self.meas.neg_log_likelihood(x, self.y)
        log_w = self.log_w - self.cfg.particle_temperature * (nll - self.nll_prev).view(self.B, self.N)
        return normalised_weights(log_w)
