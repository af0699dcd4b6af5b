"""Gradient-guided posterior sampling through the scales, and the zero-shot clamp baseline.

At every scale k the sampler computes the (CFG-combined) logits of scale k, relaxes them to
soft tokens (Gumbel-softmax or straight-through), decodes the coarse estimate
``x_hat_k = D(f_hat_{<k} + phi(up(soft_k)))`` from the already-sampled coarser scales plus
the soft current scale, measures the filtered residual ``F_k(A(x_hat_k) - y)``, and moves the
logits (only the logits: the transformer is not differentiated) down the gradient of that
loss, ``grad_steps`` times. Then it samples scale k's tokens from the updated logits and goes
on, as in unguided sampling. With ``dps_norm`` the step is divided by each sample's own
residual norm (DPS, Chung et al. 2023): the update is ``alpha_k * grad ||r_b||``.

``clamp`` (VAR-style zero-shot editing) teacher-forces, at every scale, the tokens of the
encoded observation where they are known: for masks, tokens whose footprint is observed
(``clamp_known`` fraction or more); for super-resolution and deblurring, every token of the
scales below the measurement's Nyquist limit. ``clamp`` and guidance combine
(``clamp+guided``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scalewise.posterior.filters import FrequencyAwareFilter
from scalewise.posterior.measurements import Operator
from scalewise.sampling.generate import (
    CFG_SCHEDULES, ScaleRunner, advance_scale, cfg_scale, check_sampling_args, draw, filter_logits, simple_resample,
)
from scalewise.models.tokenizer import Tokenizer, area_down
from scalewise.models.transformer import ScaleTransformer

ALPHA_SCHEDULES = ("constant", "increasing", "decreasing")
RELAXATIONS = ("gumbel", "straight_through")
GRAD_WRT = ("probs", "logits")
METHODS = ("prior", "clamp", "guided", "clamp+guided")


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
    resample_threshold: float = 0.0  # simple resampling of tokens below this probability (0 = off)
    resample_iters: int = 0
    clamp_known: float = 0.5  # clamp: a token is known when this fraction of its footprint is observed
    track_loss: bool = False  # also measure each scale's loss after its update (one more decode per scale)

    def __post_init__(self) -> None:
        check_sampling_args(self.cfg, self.top_k, self.top_p, self.temperature)
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise ValueError(f"cfg_schedule={self.cfg_schedule!r} is unknown; allowed: {list(CFG_SCHEDULES)}")
        if self.alpha_schedule not in ALPHA_SCHEDULES:
            raise ValueError(f"alpha_schedule={self.alpha_schedule!r} is unknown; allowed: {list(ALPHA_SCHEDULES)}")
        if self.relax not in RELAXATIONS:
            raise ValueError(f"relax={self.relax!r} is unknown; allowed: {list(RELAXATIONS)}")
        if self.grad_wrt not in GRAD_WRT:
            raise ValueError(f"grad_wrt={self.grad_wrt!r} is unknown; allowed: {list(GRAD_WRT)}")
        if self.alpha < 0 or self.grad_steps < 0 or self.grad_clip < 0 or self.tau <= 0:
            raise ValueError("alpha, grad_steps and grad_clip must be >= 0 and tau > 0")
        if not 0.0 < self.clamp_known <= 1.0:
            raise ValueError(f"clamp_known must lie in (0, 1], got {self.clamp_known}")

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


def fill_unknown(y_BCHW: torch.Tensor, mask_B1HW: torch.Tensor, passes: int = 6) -> torch.Tensor:
    """Fill unobserved pixels by normalised convolution (growing 3x3 averages of known pixels)."""
    x, m = y_BCHW * mask_B1HW, mask_B1HW.expand_as(y_BCHW).float()
    C = x.shape[1]
    k = torch.ones(C, 1, 3, 3, dtype=x.dtype, device=x.device)
    filled_x, filled_m = x, m
    for _ in range(passes):
        num = F.conv2d(filled_x, k, padding=1, groups=C)
        den = F.conv2d(filled_m, k, padding=1, groups=C)
        est = num / den.clamp_min(1e-6)
        new_m = (den > 0).float()
        filled_x = torch.where(filled_m > 0, filled_x, est * new_m)
        filled_m = torch.maximum(filled_m, new_m)
    return torch.where(filled_m > 0, filled_x, torch.zeros_like(filled_x))


@torch.no_grad()
def clamp_plan(tokenizer: Tokenizer, operator: Operator, y: torch.Tensor,
               known_fraction: float = 0.5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per scale: (tokens (B, p*p), known (B, p*p) bool) from encoding the observation."""
    mask = operator.known_mask()
    obs = operator.pinv(y)
    if mask is not None:
        obs = fill_unknown(obs, mask.to(obs))
    idx_maps = tokenizer.encode(obs.clamp(-1, 1))
    pn = tokenizer.patch_nums
    plan = []
    for si, p in enumerate(pn):
        tokens = idx_maps[si].flatten(1)
        if mask is not None:
            frac = area_down(mask.to(obs).expand(obs.shape[0], 1, -1, -1), p).flatten(1)
            known = frac >= known_fraction - 1e-6
        else:
            full = p / pn[-1] <= operator.band + 1e-6
            known = torch.full_like(tokens, full, dtype=torch.bool)
        plan.append((tokens, known))
    return plan


def gumbel_noise(shape: torch.Size, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log u)`` of ``shape``, seeded."""
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-10, 1 - 1e-10)
    return -(-u.log()).log()


def _relax(z_BlV: torch.Tensor, kind: str, tau: float, noise_BlV: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable token distribution (B, l, V) from logits.

    ``gumbel``: ``softmax((z + g) / tau)`` with fixed Gumbel noise ``g`` (one draw per scale,
    so successive gradient steps descend one objective). ``straight_through``: the one-hot
    argmax forward, ``softmax(z / tau)``'s gradient backward.
    """
    if kind == "gumbel":
        g = noise_BlV if noise_BlV is not None else torch.zeros_like(z_BlV)
        return ((z_BlV + g) / tau).softmax(-1)
    soft = (z_BlV / tau).softmax(-1)
    hard = F.one_hot(z_BlV.argmax(-1), z_BlV.shape[-1]).to(soft.dtype)
    return hard + soft - soft.detach()


class GradientGuidedSampler:
    """Posterior sampling ``x ~ p(x | y)`` with a trained transformer + tokenizer.

    Works with any mask kind (VAR ``causal``, SRDD ``markov``/``markov_prev``); batched, with
    a per-sample residual norm.
    """

    def __init__(self, model: ScaleTransformer, tokenizer: Tokenizer, measurement: MeasurementModel,
                 config: PosteriorGuidanceConfig | None = None):
        ours = (list(model.cfg.patch_nums), model.cfg.vocab_size, model.cfg.cvae)
        theirs = (list(tokenizer.patch_nums), tokenizer.cfg.vocab_size, tokenizer.cfg.cvae)
        if ours != theirs:
            raise ValueError(f"transformer (patch_nums, V, Cvae) = {ours} does not match the tokenizer's {theirs}")
        self.model, self.tokenizer = model.eval(), tokenizer.eval()
        self.measurement = measurement
        self.config = config or PosteriorGuidanceConfig()

    def sample(self, y: torch.Tensor, labels: torch.Tensor | list[int] | None = None, guided: bool = True,
               clamp: bool = False, seed: int = 0) -> PosteriorSample:
        """Restore a batch from its measurements ``y`` (B, ...).

        Args:
            labels: class indices (B,), or None for unconditional sampling (null class, no CFG).
            guided: apply the gradient guidance (False = the prior, or clamp alone).
            clamp: teacher-force the observation's known tokens (zero-shot baseline).
        """
        model, tok, cfg = self.model, self.tokenizer, self.config
        op = self.measurement.operator
        op.check_y(y)
        device = next(model.parameters()).device
        B, K, pn = y.shape[0], len(model.cfg.patch_nums), model.cfg.patch_nums
        if guided and cfg.grad_steps > 0 and cfg.alpha > 0 and cfg.guide_from_scale >= K:
            raise ValueError(f"guide_from_scale={cfg.guide_from_scale} but the model has {K} scales (0..{K - 1}): "
                             "nothing would be guided; lower guide_from_scale")
        if labels is None:
            labels_B = torch.full((B,), model.num_classes, dtype=torch.long, device=device)
            use_cfg = False
        else:
            labels_B = torch.as_tensor(labels, dtype=torch.long, device=device).flatten()
            if labels_B.numel() != B:
                raise ValueError(f"got {labels_B.numel()} labels for {B} measurements")
            use_cfg = cfg.cfg > 0
        gen = torch.Generator(device=device).manual_seed(seed)
        plan = clamp_plan(tok, op, y, cfg.clamp_known) if clamp else None
        t0 = time.perf_counter()
        with torch.no_grad():
            all_labels = torch.cat((labels_B, torch.full_like(labels_B, model.num_classes))) if use_cfg else labels_B
            cond_BD = model.cond(all_labels)
            runner = ScaleRunner(model, cond_BD)
            H = pn[-1]
            f_hat = cond_BD.new_zeros(B, tok.cfg.cvae, H, H)
            h = model.embed_inputs(cond_BD, None, model.scale_slices()[0])
        tokens_out, losses = [], []
        for si, p in enumerate(pn):
            with torch.no_grad():
                t = cfg_scale(cfg.cfg, si, K, cfg.cfg_schedule)
                h_in = h + model.mask_embed if model.cfg.masked_objective else h
                logits = runner.logits(h_in, si, t if use_cfg else None)  # (B, n, V)
            alpha = cfg.alpha_at(si, K) if guided else 0.0
            if alpha > 0 and cfg.grad_steps > 0:
                logits, loss_pair = self._guide(logits, f_hat, y, si, p, alpha, gen,
                                                None if plan is None else plan[si])
                losses.append(loss_pair)
            with torch.no_grad():
                probs = filter_logits(logits / cfg.temperature, cfg.top_k, cfg.top_p).softmax(-1)
                tokens = draw(probs, gen)
                if cfg.resample_threshold > 0 and cfg.resample_iters > 0:
                    tokens, _ = simple_resample(probs, tokens, cfg.resample_threshold, cfg.resample_iters, gen)
                if plan is not None:
                    known_tokens, known = plan[si]
                    tokens = torch.where(known, known_tokens, tokens)
                runner.finish_scale(si)
                idx_Bhw = tokens.view(B, p, p)
                tokens_out.append(idx_Bhw)
                f_hat, h = advance_scale(model, tok, cond_BD, si, f_hat, idx_Bhw, use_cfg)
        with torch.no_grad():
            images = tok.f_to_img(f_hat)
        return PosteriorSample(images, tokens_out, losses, time.perf_counter() - t0)

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
                    probs = wrt = _relax(z, cfg.relax, cfg.tau, noise).detach().requires_grad_(True)
                else:  # through the relaxation's softmax (vanishes where the model is confident)
                    z.requires_grad_(True)
                    probs, wrt = _relax(z, cfg.relax, cfg.tau, noise), z
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
