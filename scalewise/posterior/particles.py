"""Sequential Monte Carlo over the scales: N particles per measurement, reweighted by the
measurement likelihood of their full-image estimates and resampled between scales.

The weights are tempered: ``log w_i += -lambda * (L_i^k - L_i^{k-1})`` with
``L = ||A(x0) - y||^2 / (2 sigma_y^2)`` the negative log-likelihood of particle i's estimate
after scale k (``lambda`` = ``particle_temperature``; the guidance already tilts each scale's
proposal towards the data, and ``lambda < 1`` keeps the weights from collapsing onto one
particle after the first scale). Pure functions on (B, N) tensors: B measurements, N particles.
"""

from __future__ import annotations

import torch


def normalised_weights(log_w_BN: torch.Tensor) -> torch.Tensor:
    """Weights (B, N) summing to 1 per row from log-weights (B, N)."""
    return log_w_BN.softmax(dim=1)


def effective_sample_size(w_BN: torch.Tensor) -> torch.Tensor:
    """``1 / sum_i w_i^2`` per row (B,), in [1, N], for normalised weights (B, N)."""
    return 1.0 / w_BN.pow(2).sum(dim=1)


def systematic_resample(w_BN: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Ancestor indices (B, N) in [0, N) for normalised weights (B, N): systematic resampling.

    One uniform offset per row; particle i is copied ``floor(N w_i)`` or ``ceil(N w_i)`` times,
    so the expected number of copies is exactly ``N w_i``.
    """
    B, N = w_BN.shape
    u_B1 = torch.rand(B, 1, generator=generator, device=w_BN.device)
    points_BN = (torch.arange(N, device=w_BN.device, dtype=w_BN.dtype) + u_B1) / N
    cdf_BN = w_BN.cumsum(dim=1)
    cdf_BN = cdf_BN / cdf_BN[:, -1:]
    return torch.searchsorted(cdf_BN, points_BN, right=True).clamp_(max=N - 1)


def flat_ancestors(ancestors_BN: torch.Tensor) -> torch.Tensor:
    """Ancestor indices (B, N) within each group -> row indices (B*N,) of the flattened batch."""
    B, N = ancestors_BN.shape
    return (ancestors_BN + N * torch.arange(B, device=ancestors_BN.device).unsqueeze(1)).flatten()


def weighted_mean(x_BN_: torch.Tensor, w_BN: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i x_i`` over the particle axis: (B, N, ...) with weights (B, N) -> (B, ...)."""
    w = w_BN.to(x_BN_.dtype).view(*w_BN.shape, *([1] * (x_BN_.dim() - 2)))
    return (w * x_BN_).sum(dim=1)
