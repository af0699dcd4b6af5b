"""The multi-scale residual VQ-VAE tokenizer (VAR's tokenizer).

Encoder ``E`` maps an image (B, C_img, H_img, W_img) in [-1, 1] to a latent ``f`` of shape
(B, Cvae, H, W) with ``H = H_img / downsample``. For scales ``patch_nums = (p_1..p_K)``
(``p_K == H``) the quantizer computes, with one shared codebook of V vectors of size Cvae:

    r_k   = argmin_v || area_down(f_rest, p_k) - e_v ||           index map (B, p_k, p_k)
    h_k   = phi_k(upsample(e[r_k], H))                            (B, Cvae, H, W)
    f_hat = f_hat + h_k,   f_rest = f_rest - h_k

with ``phi(h) = (1 - q) h + q conv3x3(h)`` and a few phi convs shared across scales. The
decoder maps ``f_hat`` back to an image. Decoding from the first k scales gives the coarse
estimate ``x_hat_k = D(f_hat_{<=k})``.

Module and parameter names follow the public VAR release (``encoder.down.0.block.0.conv1``,
``quantize.embedding``, ``quantize.quant_resi.qresi_ls.0``, ``quant_conv``, ...), so its
checkpoints map onto this module one to one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scalewise.core.config import ConfigError


# ----------------------------------------------------------------------------- config


@dataclass
class TokenizerConfig:
    """Architecture of the tokenizer. ``downsample`` must equal ``2 ** (len(ch_mult) - 1)``."""

    ch: int = 16
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 1
    downsample: int = 4
    vocab_size: int = 512
    cvae: int = 16
    patch_nums: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 8])
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    beta: float = 0.25
    use_attn: bool = False
    in_channels: int = 1

    def __post_init__(self) -> None:
        self.ch_mult = [int(m) for m in self.ch_mult]
        self.patch_nums = [int(p) for p in self.patch_nums]
        if 2 ** (len(self.ch_mult) - 1) != self.downsample:
            raise ConfigError(
                f"downsample={self.downsample} does not match ch_mult={self.ch_mult}: "
                f"len(ch_mult)-1 downsamplings give {2 ** (len(self.ch_mult) - 1)}; "
                "change one of them so that downsample == 2**(len(ch_mult)-1)"
            )
        if not self.patch_nums or any(p <= 0 for p in self.patch_nums):
            raise ConfigError(f"patch_nums must be positive integers, got {self.patch_nums}")
        if any(b <= a for a, b in zip(self.patch_nums, self.patch_nums[1:])):
            raise ConfigError(f"patch_nums must be strictly increasing, got {self.patch_nums}")
        if self.in_channels not in (1, 3):
            raise ConfigError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if not 0.0 <= self.quant_resi <= 1.0:
            raise ConfigError(f"quant_resi must lie in [0, 1], got {self.quant_resi}")
        if self.share_quant_resi < 1:
            raise ConfigError(f"share_quant_resi must be >= 1, got {self.share_quant_resi}")
        if self.vocab_size < 2 or self.cvae < 1 or self.ch < 1:
            raise ConfigError("vocab_size must be >= 2, cvae and ch >= 1")

    @property
    def latent_size(self) -> int:
        """H = W of the latent ``f`` (the last patch number)."""
        return self.patch_nums[-1]

    @property
    def num_tokens(self) -> int:
        """Total tokens over all scales, sum of p_k^2."""
        return sum(p * p for p in self.patch_nums)

    def check_image_size(self, image_size: int) -> None:
        """Raise a :class:`ConfigError` unless ``image_size / downsample == patch_nums[-1]``."""
        if image_size % self.downsample != 0:
            raise ConfigError(
                f"image_size={image_size} is not divisible by downsample={self.downsample}; "
                "choose an image_size that is a multiple of the downsample factor"
            )
        latent = image_size // self.downsample
        if self.patch_nums[-1] != latent:
            raise ConfigError(
                f"patch_nums={self.patch_nums} must end at the latent size "
                f"image_size/downsample = {image_size}/{self.downsample} = {latent}"
            )


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


# ----------------------------------------------------------------------------- conv blocks


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6, affine=True)


def _silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU of a fresh activation; in place when no graph is recorded (saves a large allocation)."""
    return F.silu(x, inplace=not torch.is_grad_enabled())


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_silu(self.norm1(x_BChw)))
        h = self.conv2(_silu(self.norm2(h)))
        return self.nin_shortcut(x_BChw) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions of a feature map."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BChw.shape
        qkv = self.qkv(self.norm(x_BChw)).view(B, 3, C, H * W)
        q, k, v = (t.transpose(1, 2).unsqueeze(1) for t in qkv.unbind(1))  # (B, 1, HW, C)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C)
        h = h.squeeze(1).transpose(1, 2).reshape(B, C, H, W)
        return x_BChw + self.proj_out(h)


class Downsample2x(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x_BChw, (0, 1, 0, 1)))


class Upsample2x(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x_BChw, scale_factor=2, mode="nearest"))


class Encoder(nn.Module):
    """Image (B, C_img, H_img, W_img) -> latent (B, Cvae, H_img/ds, W_img/ds)."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, 1, 1)
        in_mult = (1,) + tuple(mult)
        self.down = nn.ModuleList()
        block_in = ch
        for level, m in enumerate(mult):
            stage = nn.Module()
            block_in, block_out = ch * in_mult[level], ch * m
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                stage.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if level == len(mult) - 1 and cfg.use_attn:
                    stage.attn.append(AttnBlock(block_in))
            if level != len(mult) - 1:
                stage.downsample = Downsample2x(block_in)
            self.down.append(stage)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in) if cfg.use_attn else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.cvae, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn) > 0:
                    h = stage.attn[i](h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(_silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, Cvae, H, W) -> image (B, C_img, H*ds, W*ds), not clamped."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.cvae, block_in, 3, 1, 1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in) if cfg.use_attn else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.up = nn.ModuleList()
        for level in reversed(range(len(mult))):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()
            block_out = ch * mult[level]
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if level == len(mult) - 1 and cfg.use_attn:
                    stage.attn.append(AttnBlock(block_in))
            if level != 0:
                stage.upsample = Upsample2x(block_in)
            self.up.insert(0, stage)  # self.up[level], as in the VAR layout
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.in_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for level in reversed(range(len(self.up))):
            stage = self.up[level]
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn) > 0:
                    h = stage.attn[i](h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(_silu(self.norm_out(h)))


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


# ----------------------------------------------------------------------------- VQ-VAE


class Tokenizer(nn.Module):
    """Multi-scale residual VQ-VAE: images in [-1, 1] <-> per-scale index maps."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.cvae, cfg.cvae, 3, 1, 1)
        self.quantize = MultiScaleQuantizer(cfg)
        self.post_quant_conv = nn.Conv2d(cfg.cvae, cfg.cvae, 3, 1, 1)
        self.decoder = Decoder(cfg)
        self._memory_format = torch.contiguous_format

    def channels_last_(self) -> "Tokenizer":
        """Switch convolutions to channels-last layout (20-25% faster decoding on CPU at
        64 px and above; slower for training at 32 px). Values are unchanged. Returns self."""
        self.to(memory_format=torch.channels_last)
        self._memory_format = torch.channels_last
        return self

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.quantize.patch_nums

    # --- training -----------------------------------------------------------------------

    def forward(self, img_BCHW: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        """Reconstruct ``img`` (B, C, H_img, W_img) in [-1, 1]; returns (recon, quantizer output)."""
        q = self.quantize(self.img_to_f(img_BCHW))
        return self.f_to_img(q.f_hat, clamp=False), q

    # --- images <-> latents ---------------------------------------------------------------

    def img_to_f(self, img_BCHW: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> continuous latent f (B, Cvae, H, W)."""
        return self.quant_conv(self.encoder(img_BCHW.contiguous(memory_format=self._memory_format)))

    def f_to_img(self, f_hat_BChw: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Latent f_hat (B, Cvae, H, W) -> image (B, C, H_img, W_img), clamped to [-1, 1]."""
        img = self.decoder(self.post_quant_conv(f_hat_BChw.contiguous(memory_format=self._memory_format)))
        return img.clamp(-1, 1) if clamp else img

    # --- tokens ---------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, img_BCHW: torch.Tensor) -> list[torch.Tensor]:
        """Image in [-1, 1] -> K index maps, map k of shape (B, p_k, p_k), int64 in [0, V)."""
        return self.quantize(self.img_to_f(img_BCHW)).idx_maps

    def idx_to_f_hat(self, idx_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """f_hat (B, Cvae, H, W) from the first ``len(idx_maps)`` scales' index maps."""
        return self.embeds_to_f_hat([self.quantize.embed(idx) for idx in idx_maps])

    def embeds_to_f_hat(self, embeds: Sequence[torch.Tensor]) -> torch.Tensor:
        """f_hat from per-scale code vectors (hard or soft), scale k of shape (B, Cvae, p_k, p_k)."""
        if len(embeds) > self.quantize.num_scales:
            raise ValueError(f"got {len(embeds)} scales, the tokenizer has {self.quantize.num_scales}")
        B, H = embeds[0].shape[0], self.patch_nums[-1]
        f_hat = embeds[0].new_zeros(B, self.cfg.cvae, H, H)
        for si, emb in enumerate(embeds):
            f_hat = self.quantize.add_scale(f_hat, si, emb)
        return f_hat

    def decode(self, idx_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Image in [-1, 1] (B, C, H_img, W_img) from the first k scales' index maps."""
        return self.f_to_img(self.idx_to_f_hat(idx_maps))

    def decode_soft(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Image from per-scale token probabilities, scale k of shape (B, p_k^2, V).

        Differentiable in ``probs``, so a loss on the image reaches the transformer's logits.
        """
        embeds = [self.quantize.soft_embed(pr, p) for pr, p in zip(probs, self.patch_nums)]
        return self.f_to_img(self.embeds_to_f_hat(embeds))

    # --- transformer inputs ---------------------------------------------------------------

    def teacher_forcing_input(self, idx_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Transformer inputs of scales 2..K: ``area_down(f_hat_{<k}, p_k)`` flattened.

        Returns (B, sum_{k>=2} p_k^2, Cvae); the first scale's input is the start token.
        """
        B, H = idx_maps[0].shape[0], self.patch_nums[-1]
        f_hat = self.quantize.embedding.weight.new_zeros(B, self.cfg.cvae, H, H)
        inputs: list[torch.Tensor] = []
        for si in range(self.quantize.num_scales - 1):
            f_hat, next_BChw = self.next_scale_input(si, f_hat, self.quantize.embed(idx_maps[si]))
            inputs.append(next_BChw.flatten(2).transpose(1, 2))  # (B, p_{k+1}^2, Cvae)
        return torch.cat(inputs, dim=1)

    def next_scale_input(
        self, si: int, f_hat_BChw: torch.Tensor, emb_BChw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add scale ``si``'s code vectors to f_hat; return (f_hat, input of scale si+1).

        The input of scale si+1 is ``area_down(f_hat, p_{si+1})`` (B, Cvae, p, p); after the
        last scale it is f_hat itself.
        """
        f_hat_BChw = self.quantize.add_scale(f_hat_BChw, si, emb_BChw)
        if si + 1 < self.quantize.num_scales:
            return f_hat_BChw, area_down(f_hat_BChw, self.patch_nums[si + 1])
        return f_hat_BChw, f_hat_BChw
