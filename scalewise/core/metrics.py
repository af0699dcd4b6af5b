"""Image-quality metrics on tensors (pure functions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(x_BCHW: torch.Tensor, y_BCHW: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB, shape (B,), for images with values spanning ``data_range``.

    The default ``data_range=2`` is for images in [-1, 1] (equal to PSNR on [0, 1] with 1).
    Identical images give +inf.
    """
    mse_B = (x_BCHW.float() - y_BCHW.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse_B)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x_BCHW: torch.Tensor, y_BCHW: torch.Tensor, data_range: float = 2.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM, shape (B,), in [-1, 1] (Wang et al. 2004; K1 = 0.01, K2 = 0.03).

    Local means, variances and covariance use a Gaussian window (``window`` taps, std ``sigma``
    pixels) over "valid" positions only (no padding), per channel; the SSIM map is averaged over
    channels and positions. Windows larger than the image shrink to the largest odd size that
    fits (e.g. 7 on 8x8 images), keeping ``sigma``. The default ``data_range=2`` is for images in
    [-1, 1]. Identical images give exactly 1.
    """
    if x_BCHW.shape != y_BCHW.shape or x_BCHW.dim() != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of the same shape, got {tuple(x_BCHW.shape)} "
                         f"and {tuple(y_BCHW.shape)}")
    if window < 1 or sigma <= 0 or data_range <= 0:
        raise ValueError(f"ssim needs window >= 1, sigma > 0 and data_range > 0, got {window}, {sigma}, {data_range}")
    B, C, H, W = x_BCHW.shape
    win = min(window, H, W)
    win -= 1 - win % 2  # odd
    g = _gaussian_window(win, sigma).to(x_BCHW.device)
    w = torch.outer(g, g).expand(C, 1, win, win)
    x, y = x_BCHW.double(), y_BCHW.double()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=C)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s_map.flatten(1).mean(1).float()
