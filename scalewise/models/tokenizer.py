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

from typing import Sequence

import torch
import torch.nn as nn

from scalewise.models.autoencoder import Decoder, Encoder
from scalewise.models.quantizer import (  # noqa: F401  (area_down, upsample, phi_index, nearest_code: re-exported)
    MultiScaleQuantizer,
    QuantizerOutput,
    area_down,
    nearest_code,
    phi_index,
    upsample,
)
from scalewise.models.tokenizer_config import TokenizerConfig

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
