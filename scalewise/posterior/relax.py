"""Differentiable stand-ins for a scale's sampled tokens: Gumbel-softmax and straight-through."""

from __future__ import annotations

import torch
import torch.nn.functional as F

RELAXATIONS = ("gumbel", "straight_through")


def gumbel_noise(shape: torch.Size, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log u)`` of ``shape``, seeded."""
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-10, 1 - 1e-10)
    return -(-u.log()).log()


def relaxed_tokens(z_BlV: torch.Tensor, kind: str, tau: float, noise_BlV: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable token distribution (B, l, V) from logits (B, l, V).

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
