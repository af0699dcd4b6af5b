"""SSIM: identity, monotonicity in noise, symmetry, range, small images, per-image output."""

from __future__ import annotations

import pytest
import torch

from scalewise.core.metrics import psnr, ssim


def smooth_images(batch: int, channels: int, size: int) -> torch.Tensor:
    t = torch.linspace(0, 1, size)
    base = torch.sin(2 * torch.pi * (t[:, None] + 0.7 * t[None, :]))
    phases = torch.arange(batch * channels, dtype=torch.float32).view(batch, channels, 1, 1)
    return (0.8 * torch.cos(phases) * base).clamp(-1, 1)


@pytest.mark.parametrize("size", [8, 32])
def test_identity_and_per_image_shape(size):
    x = smooth_images(3, 2, size)
    s = ssim(x, x)
    assert s.shape == (3,)
    torch.testing.assert_close(s, torch.ones(3))


@pytest.mark.parametrize("size", [8, 32])
def test_decreases_with_noise_and_symmetric(size):
    x = smooth_images(2, 1, size)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    scores = [ssim(x, (x + s * noise).clamp(-1, 1)) for s in (0.02, 0.1, 0.3, 1.0)]
    for a, b in zip(scores, scores[1:]):
        assert (b < a).all()
    y = (x + 0.2 * noise).clamp(-1, 1)
    torch.testing.assert_close(ssim(x, y), ssim(y, x))


def test_range_and_independent_images():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    y = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    for s in (ssim(x, y), ssim(x, -x), ssim(x, 0.5 - 0.3 * x)):
        assert s.min() >= -1 and s.max() <= 1
    assert ssim(x, y).abs().max() < 0.1  # independent noise: no structure in common
    assert (ssim(x + 0.5, 0.5 - x, data_range=3.0) < 0).all()  # anticorrelated, same mean


def test_per_image_independence():
    x = smooth_images(2, 1, 16)
    y = x.clone()
    y[1] = (y[1] + 0.5 * torch.randn(y[1].shape, generator=torch.Generator().manual_seed(2))).clamp(-1, 1)
    s = ssim(x, y)
    assert s[0] == pytest.approx(1.0) and s[1] < 0.9
    torch.testing.assert_close(ssim(x[1:], y[1:]), s[1:])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 16, 16))


def test_psnr_kept():
    x = torch.zeros(1, 1, 4, 4)
    assert psnr(x, x + 0.2).item() == pytest.approx(10 * torch.log10(torch.tensor(4 / 0.04)).item(), rel=1e-5)
