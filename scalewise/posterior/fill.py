"""Harmonic fill of unobserved pixels, batched in torch (the fast alternative to biharmonic).

The filled image ``x`` keeps every observed pixel and solves the discrete Laplace equation on
the unobserved ones: ``(L x)_u = 0`` for every unknown pixel ``u``, with ``L`` the graph
Laplacian of the image's 4-neighbour grid (Neumann boundary: a border pixel has only its
in-image neighbours). Equivalently, it minimises ``sum over neighbouring pairs (x_i - x_j)^2``
with the observed pixels fixed, so each filled value is the mean of its neighbours and lies
within the range of the observed values (discrete maximum principle).

The system ``L_uu x_u = -L_uk x_k`` is solved by conjugate gradients for the whole batch at
once, each image with its own mask, so there is no per-image Python loop and no sparse
factorisation: about 100x faster than scikit-image's biharmonic inpainting for per-image masks
at 32 px. An unknown region that touches no observed pixel (an image with nothing observed)
stays 0, mid-grey.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _neighbour_sum(x_BCHW: torch.Tensor) -> torch.Tensor:
    """Sum of each pixel's in-image 4-neighbours (zero outside the image)."""
    p = F.pad(x_BCHW, (1, 1, 1, 1))
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]


def grid_laplacian(x_BCHW: torch.Tensor) -> torch.Tensor:
    """``L x``: degree x value minus the neighbour sum, on the Neumann 4-neighbour grid (B, C, H, W)."""
    deg = _neighbour_sum(torch.ones_like(x_BCHW[:1, :1]))
    return deg * x_BCHW - _neighbour_sum(x_BCHW)


@torch.no_grad()
def harmonic_fill(y_BCHW: torch.Tensor, known_B1HW: torch.Tensor, tol: float = 1e-5,
                  max_iters: int = 2000) -> torch.Tensor:
    """Fill the unobserved pixels of ``y`` (B, C, H, W) harmonically; observed pixels stay as given.

    ``known_B1HW`` is (B or 1, 1, H, W) with 1 = observed. Conjugate gradients run until every
    image's residual norm is below ``tol`` x its right-hand side's norm (or ``max_iters``).
    Returns (B, C, H, W) float32 on ``y``'s device, not clipped.
    """
    if y_BCHW.dim() != 4 or known_B1HW.dim() != 4 or known_B1HW.shape[1] != 1 \
            or known_B1HW.shape[0] not in (1, y_BCHW.shape[0]) or known_B1HW.shape[-2:] != y_BCHW.shape[-2:]:
        raise ValueError(f"harmonic_fill: y must be (B, C, H, W) and the mask (B or 1, 1, H, W) of the same "
                         f"H, W; got y {tuple(y_BCHW.shape)}, mask {tuple(known_B1HW.shape)}")
    y = y_BCHW.double()
    unknown = (known_B1HW.to(y.device) < 0.5).expand_as(y)
    x_known = torch.where(unknown, torch.zeros_like(y), y)

    def apply(v: torch.Tensor) -> torch.Tensor:  # L_uu v for v supported on the unknown pixels
        return torch.where(unknown, grid_laplacian(v), torch.zeros_like(v))

    b = torch.where(unknown, _neighbour_sum(x_known), torch.zeros_like(y))  # -L_uk x_k
    x = torch.zeros_like(y)
    r = b.clone()
    p = r.clone()
    dims = (1, 2, 3)
    rr = (r * r).sum(dims, keepdim=True)
    stop = (tol ** 2) * rr.clamp_min(1e-300)
    for _ in range(max_iters):
        if bool((rr <= stop).all()):
            break
        Ap = apply(p)
        pAp = (p * Ap).sum(dims, keepdim=True)
        step = torch.where(pAp > 0, rr / pAp.clamp_min(1e-300), torch.zeros_like(rr))
        x = x + step * p
        r = r - step * Ap
        rr_new = (r * r).sum(dims, keepdim=True)
        p = r + (rr_new / rr.clamp_min(1e-300)) * p
        rr = rr_new
    return (x_known + x).float()
