"""Token clamping (VAR-style zero-shot editing): the observation's known tokens per scale.

For masks, a token is known where ``known_fraction`` or more of its footprint is observed; for
super-resolution and deblurring, every token of the scales below the measurement's Nyquist
limit is known.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scalewise.models.tokenizer import Tokenizer, area_down
from scalewise.posterior.measurements import Operator


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


def clamp_tokens(tokens_Bl: torch.Tensor, planned: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``tokens`` (B, l) with the plan's known tokens put in: one scale of :func:`clamp_plan`."""
    known_tokens_Bl, known_Bl = planned
    return torch.where(known_Bl, known_tokens_Bl, tokens_Bl)
