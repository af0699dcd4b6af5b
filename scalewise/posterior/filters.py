"""Frequency-aware filtering of the measurement residual, scale by scale.

After scale k the estimate ``x_hat_k = D(f_hat_{<=k})`` only holds detail up to the scale's
resolution ``p_k / p_K`` of the full band, so comparing it with ``y`` at full resolution would
push coarse tokens to explain fine detail they cannot represent. The filter low-passes both
``A(x_hat_k)`` and ``y`` to the band the scale carries (area downsampling to that resolution),
until the latent resolution passes the measurement's own Nyquist limit (``operator.band``:
1 for inpainting, 1/f for super-resolution by f); from that scale on the full band is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def bandwidth(p_k: int, p_last: int, measurement_band: float) -> float:
    """Fraction (0, 1] of the measurement's band that scale ``p_k`` (of ``p_last``) resolves.

    Reaches 1 when ``p_k / p_last >= measurement_band``: the scale's resolution passes the
    measurement's Nyquist limit.
    """
    if not 0.0 < measurement_band <= 1.0:
        raise ValueError(f"measurement_band must lie in (0, 1], got {measurement_band}")
    return min(1.0, (p_k / p_last) / measurement_band)


def lowpass(x_BCHW: torch.Tensor, fraction: float) -> torch.Tensor:
    """Area-average ``x`` down to ``fraction`` of its resolution (identity at fraction 1)."""
    size = x_BCHW.shape[-1]
    target = max(1, round(size * fraction))
    if target >= size:
        return x_BCHW
    return F.interpolate(x_BCHW, size=(target, target), mode="area")


@dataclass
class FrequencyAwareFilter:
    """Per-scale low-pass of ``A(x_hat_k)`` and ``y``.

    Args:
        patch_nums: the tokenizer's scale schedule (p_1..p_K).
        measurement_band: the operator's band (``Operator.band``), in (0, 1].
        enabled: False = always full band (plain DPS residual).
    """

    patch_nums: tuple[int, ...]
    measurement_band: float = 1.0
    enabled: bool = True

    def fraction(self, si: int) -> float:
        """Band fraction used at scale ``si`` (0-based): 1 = full band."""
        if not self.enabled:
            return 1.0
        return bandwidth(self.patch_nums[si], self.patch_nums[-1], self.measurement_band)

    def split(self, residual: torch.Tensor, si: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, high)`` bands of a residual ``A(x_hat) - y`` at scale ``si``.

        ``low`` is at the reduced resolution; ``high`` is what the low band misses at full
        resolution (zeros at full band).
        """
        frac = self.fraction(si)
        low = lowpass(residual, frac)
        if low.shape[-1] == residual.shape[-1]:
            return low, torch.zeros_like(residual)
        high = residual - F.interpolate(low, size=residual.shape[-2:], mode="nearest")
        return low, high
