"""Harmonic fill: observed pixels kept, the discrete Laplace equation on the rest, no overshoot."""

from __future__ import annotations

import pytest
import torch

from scalewise.posterior.clamp import complete_observation
from scalewise.posterior.fill import grid_laplacian, harmonic_fill
from scalewise.posterior.measurements import build_operator


def _smooth_images(n: int, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, size, size, generator=g) * 2 - 1
    return torch.nn.functional.avg_pool2d(x, 5, 1, 2, count_include_pad=False)


def test_harmonic_fill_keeps_observed_pixels_and_solves_laplace_on_the_rest():
    x = _smooth_images(4)
    known = (torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1)) < 0.3).float()  # per-image masks
    filled = harmonic_fill(x, known)
    obs = known.expand_as(x).bool()
    torch.testing.assert_close(filled[obs], x[obs], atol=0, rtol=0)
    assert grid_laplacian(filled.double())[~obs].abs().max() < 1e-4  # each filled value = mean of its neighbours
    for i in range(4):  # discrete maximum principle: no overshoot beyond the observed range
        vals = x[i][obs[i]]
        assert filled[i][~obs[i]].min() >= vals.min() - 1e-5 and filled[i][~obs[i]].max() <= vals.max() + 1e-5


def test_harmonic_fill_is_exact_on_linear_ramps_and_matches_per_image_solves():
    ramp = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(3, 1, 16, 16).clone()
    known = torch.zeros(3, 1, 16, 16)
    known[..., 0] = known[..., -1] = 1  # only the left and right columns observed
    torch.testing.assert_close(harmonic_fill(ramp, known), ramp, atol=1e-4, rtol=0)  # a ramp is harmonic
    x = _smooth_images(3)
    masks = (torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    batched = harmonic_fill(x, masks)
    one_by_one = torch.cat([harmonic_fill(x[i:i + 1], masks[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=0)


def test_harmonic_fill_edge_cases_and_errors():
    x = _smooth_images(2)
    torch.testing.assert_close(harmonic_fill(x, torch.ones(1, 1, 16, 16)), x)  # nothing to fill
    assert harmonic_fill(x, torch.zeros(1, 1, 16, 16)).abs().max() == 0  # nothing observed: mid-grey
    with pytest.raises(ValueError, match="harmonic_fill: y must be"):
        harmonic_fill(x, torch.ones(2, 16, 16))


def test_clamp_fill_choice_reaches_the_completed_observation():
    x = _smooth_images(2)
    op = build_operator("random_inpaint", {"ratio": 0.7}, 16, 1, num_images=2, seed=0)
    y = op(x)
    harm = complete_observation(op, y, fill="harmonic")
    torch.testing.assert_close(harm, harmonic_fill(op.pinv(y), op.known_mask()).clamp(-1, 1))
    assert not torch.equal(harm, complete_observation(op, y, fill="biharmonic"))
    with pytest.raises(ValueError, match="fill='nearest'"):
        complete_observation(op, y, fill="nearest")
