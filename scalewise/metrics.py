"""Image-quality metrics on tensors (pure functions)."""

from __future__ import annotations

import torch


def psnr(x_BCHW: torch.Tensor, y_BCHW: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB, shape (B,), for images with values spanning ``data_range``.

    The default ``data_range=2`` is for images in [-1, 1] (equal to PSNR on [0, 1] with 1).
    Identical images give +inf.
    """
    mse_B = (x_BCHW.float() - y_BCHW.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse_B)
