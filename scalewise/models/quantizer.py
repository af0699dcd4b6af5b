"""The multi-scale residual quantizer of the tokenizer and its pure operations (see :mod:`scalewise.models.tokenizer`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from scalewise.models.tokenizer_config import TokenizerConfig

# ----------------------------------------------------------------------------- pure ops


def area_down(x_BChw: torch.Tensor, size: int) -> torch.Tensor:
    """Area-average ``x`` (B, C, H, W) to (B, C, size, size); identity when already that size."""
    if x_BChw.shape[-1] == size and x_BChw.shape[-2] == size:
        return x_BChw
    return F.interpolate(x_BChw, size=(size, size), mode="area")


def upsample(x_BChw: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic upsampling of (B, C, p, p) to (B, C, size, size); identity when p == size."""
    if x_BChw.shape[-1] == size and x_BChw.shape[-2] == size:
        return x_BChw
    return F.interpolate(x_BChw, size=(size, size), mode="bicubic")


def phi_index(si: int, num_scales: int, num_phi: int) -> int:
    """Which of ``num_phi`` shared phi convs serves scale ``si`` (0-based) of ``num_scales``.

    Scale positions ``si / (K-1)`` in [0, 1] are matched to the nearest of ``num_phi``
    evenly spread ticks (the VAR convention: ticks at 1/12..11/12 for four convs).
    """
    if num_phi == 1:
        return 0
    at = si / (num_scales - 1) if num_scales > 1 else 0.0
    if num_phi == 4:
        lo = 1 / 3 / num_phi
    else:
        lo = 1 / 2 / num_phi
    ticks = torch.linspace(lo, 1 - lo, num_phi, dtype=torch.float64)
    return int(torch.argmin((ticks - at).abs()).item())


def nearest_code(z_NC: torch.Tensor, codebook_VC: torch.Tensor) -> torch.Tensor:
    """Index (N,) of the codebook row closest (Euclidean) to each row of ``z_NC`` (N, C)."""
    d_NV = (
        z_NC.pow(2).sum(1, keepdim=True)
        + codebook_VC.pow(2).sum(1)
        - 2.0 * z_NC @ codebook_VC.t()
    )
    return d_NV.argmin(dim=1)


# ----------------------------------------------------------------------------- quantizer


class Phi(nn.Conv2d):
    """``phi(h) = (1 - q) h + q conv3x3(h)`` on (B, Cvae, H, W)."""

    def __init__(self, cvae: int, quant_resi: float):
        super().__init__(cvae, cvae, 3, 1, 1)
        self.resi_ratio = abs(quant_resi)

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw * (1 - self.resi_ratio) + super().forward(h_BChw) * self.resi_ratio


class PhiShared(nn.Module):
    """``share_quant_resi`` phi convs shared across the K scales (see :func:`phi_index`)."""

    def __init__(self, cvae: int, quant_resi: float, num_phi: int):
        super().__init__()
        self.qresi_ls = nn.ModuleList([Phi(cvae, quant_resi) for _ in range(num_phi)])

    def for_scale(self, si: int, num_scales: int) -> Phi:
        return self.qresi_ls[phi_index(si, num_scales, len(self.qresi_ls))]


@dataclass
class QuantizerOutput:
    """What one training forward of the quantizer returns."""

    f_hat: torch.Tensor  # (B, Cvae, H, W), straight-through: gradient flows to f
    commit_loss: torch.Tensor  # scalar
    idx_maps: list[torch.Tensor]  # K tensors (B, p_k, p_k), int64
    perplexity: float  # exp(entropy) of the code histogram over all scales
    usage: float  # fraction of codes used in this batch


class MultiScaleQuantizer(nn.Module):
    """Residual quantizer over ``patch_nums`` with one shared codebook (V, Cvae)."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.vocab_size = cfg.vocab_size
        self.cvae = cfg.cvae
        self.patch_nums = tuple(cfg.patch_nums)
        self.beta = cfg.beta
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.cvae)
        nn.init.uniform_(self.embedding.weight, -1.0 / cfg.vocab_size, 1.0 / cfg.vocab_size)
        self.quant_resi = PhiShared(cfg.cvae, cfg.quant_resi, cfg.share_quant_resi)
        # EMA of how often each code is picked per training step (dead-code detection).
        self.register_buffer("usage_ema", torch.zeros(cfg.vocab_size), persistent=True)
        self._rest_pool: torch.Tensor | None = None

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    def embed(self, idx_Bhw: torch.Tensor) -> torch.Tensor:
        """Index map (B, p, p) -> code vectors (B, Cvae, p, p)."""
        return self.embedding(idx_Bhw).permute(0, 3, 1, 2)

    def soft_embed(self, probs_BlV: torch.Tensor, p: int) -> torch.Tensor:
        """Token probabilities (B, p*p, V) -> expected code vectors (B, Cvae, p, p)."""
        B = probs_BlV.shape[0]
        emb_BlC = probs_BlV.to(self.embedding.weight.dtype) @ self.embedding.weight
        return emb_BlC.transpose(1, 2).reshape(B, self.cvae, p, p)

    def add_scale(self, f_hat_BChw: torch.Tensor, si: int, emb_BChw: torch.Tensor) -> torch.Tensor:
        """``f_hat + phi_si(upsample(emb))``: add scale ``si``'s code vectors (B, Cvae, p, p)."""
        H = f_hat_BChw.shape[-1]
        h = self.quant_resi.for_scale(si, self.num_scales)(upsample(emb_BChw, H))
        return f_hat_BChw + h

    def forward(self, f_BChw: torch.Tensor) -> QuantizerOutput:
        """Quantize ``f`` over all scales (training and encoding)."""
        B, C, H, W = f_BChw.shape
        if H != self.patch_nums[-1] or W != self.patch_nums[-1]:
            raise ValueError(
                f"latent is {H}x{W} but patch_nums end at {self.patch_nums[-1]}: "
                "patch_nums[-1] must equal image_size / downsample"
            )
        f_nograd = f_BChw.detach()
        f_rest = f_nograd.clone()
        f_hat = torch.zeros_like(f_nograd)
        commit = f_BChw.new_zeros(())
        counts_V = torch.zeros(self.vocab_size, device=f_BChw.device)
        idx_maps: list[torch.Tensor] = []
        pool: list[torch.Tensor] = []
        for si, p in enumerate(self.patch_nums):
            rest_NC = area_down(f_rest, p).permute(0, 2, 3, 1).reshape(-1, C)
            idx_N = nearest_code(rest_NC, self.embedding.weight.detach())
            idx_Bhw = idx_N.view(B, p, p)
            f_hat = self.add_scale(f_hat, si, self.embed(idx_Bhw))
            f_rest = f_nograd - f_hat.detach()
            # VAR's loss: move f_hat towards f (codebook, phi) and f towards f_hat (beta).
            commit = commit + F.mse_loss(f_hat, f_nograd) + self.beta * F.mse_loss(f_hat.detach(), f_BChw)
            counts_V += torch.bincount(idx_N, minlength=self.vocab_size).float()
            idx_maps.append(idx_Bhw)
            if self.training:
                pool.append(rest_NC.detach())
        commit = commit / self.num_scales
        if self.training:
            with torch.no_grad():
                self.usage_ema.mul_(0.99).add_(counts_V, alpha=0.01)
            self._rest_pool = torch.cat(pool)
        probs_V = counts_V / counts_V.sum()
        perplexity = float(torch.exp(-(probs_V * (probs_V + 1e-10).log()).sum()))
        usage = float((counts_V > 0).float().mean())
        f_hat_st = f_BChw + (f_hat - f_BChw).detach()  # straight-through to the encoder
        return QuantizerOutput(f_hat_st, commit, idx_maps, perplexity, usage)

    @torch.no_grad()
    def revive_dead_codes(self, min_usage: float, generator: torch.Generator | None = None) -> int:
        """Re-initialise codes whose usage EMA (picks per step) is below ``min_usage``.

        Dead codes get residual vectors drawn from the last training batch, so they start
        where the data is. Returns the number of codes re-initialised.
        """
        if self._rest_pool is None:
            return 0
        dead = (self.usage_ema < min_usage).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        pool = self._rest_pool
        pick = torch.randint(pool.shape[0], (dead.numel(),), generator=generator, device="cpu")
        self.embedding.weight[dead] = pool[pick.to(pool.device)].to(self.embedding.weight.dtype)
        self.usage_ema[dead] = self.usage_ema.mean().clamp_min(min_usage)
        return int(dead.numel())
