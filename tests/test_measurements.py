"""Measurement operators: shapes, ranges, seeding, adjoints, persistence, subsets, errors."""

from __future__ import annotations

import io

import pytest
import torch

from scalewise.posterior.measurements import (
    OPERATOR_KINDS, Operator, build_operator, load_operator, mask_operator,
)

S, C, N = 16, 3, 4

CASES = {
    "identity": ("identity", {}),
    "random_inpaint": ("random_inpaint", {"ratio": 0.7}),
    "random_inpaint_range": ("random_inpaint", {"ratio_range": [0.3, 0.9]}),
    "box_center": ("box_inpaint", {"size": 6}),
    "box_random": ("box_inpaint", {"size": 0.25, "position": "random"}),
    "outpaint_center": ("outpaint", {"keep": "center", "fraction": 0.5}),
    "outpaint_left": ("outpaint", {"keep": "left"}),
    "blur": ("gaussian_blur", {"kernel_size": 5, "sigma": 1.5}),
    "blur_down": ("gaussian_blur", {"kernel_size": 5, "sigma": 2.0, "downsample": 2}),
    "sr2_area": ("superres", {"factor": 2}),
    "sr4_bicubic": ("superres", {"factor": 4, "mode": "bicubic"}),
}
RANDOM_CASES = ["random_inpaint", "random_inpaint_range", "box_random"]
MASK_CASES = ["random_inpaint", "random_inpaint_range", "box_center", "box_random", "outpaint_center",
              "outpaint_left"]
EXPECTED_SIDE = {"blur_down": S // 2, "sr2_area": S // 2, "sr4_bicubic": S // 4}


def make(case: str, seed: int = 0) -> Operator:
    kind, settings = CASES[case]
    return build_operator(kind, settings, S, C, num_images=N, seed=seed)


def rand_x(seed: int = 0, batch: int = N) -> torch.Tensor:
    return torch.rand(batch, C, S, S, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_cases_cover_every_kind():
    assert {kind for kind, _ in CASES.values()} == set(OPERATOR_KINDS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_shapes_and_range(case):
    op = make(case)
    x = rand_x()
    y = op(x)
    side = EXPECTED_SIDE.get(case, S)
    assert y.shape == (N, C, side, side) == op.y_shape(N)
    assert y.dtype == torch.float32
    op.check_y(y)
    if case != "sr4_bicubic":  # bicubic has negative lobes: may overshoot
        assert y.min() >= -1 - 1e-6 and y.max() <= 1 + 1e-6
    assert op.transpose(y).shape == x.shape
    assert op.pinv(y).shape == x.shape
    assert 0 < op.band <= 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_linear_and_differentiable(case):
    op = make(case)
    x1, x2 = rand_x(1), rand_x(2)
    torch.testing.assert_close(op(2 * x1 - 3 * x2), 2 * op(x1) - 3 * op(x2), atol=1e-5, rtol=1e-5)
    x = x1.clone().requires_grad_(True)
    op(x).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_adjoint_identity(case):
    op = make(case)
    x = rand_x(3).double().float()
    y = torch.randn(op.y_shape(N), generator=torch.Generator().manual_seed(4))
    lhs = (op(x).double() * y.double()).sum()
    rhs = (x.double() * op.transpose(y).double()).sum()
    assert abs(lhs - rhs) <= 1e-4 * max(abs(lhs), abs(rhs), 1e-3)


@pytest.mark.parametrize("case", sorted(CASES))
def test_seed_determinism(case):
    x = rand_x()
    y1, y2 = make(case, seed=5)(x), make(case, seed=5)(x)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    if case in RANDOM_CASES:
        m1, m2 = make(case, seed=5).known_mask(), make(case, seed=6).known_mask()
        assert m1.shape == (N, 1, S, S)
        assert not torch.equal(m1, m2)
        assert not torch.equal(m1[0], m1[1])  # images get different masks


@pytest.mark.parametrize("case", sorted(CASES))
def test_measure_noise_std_and_seed(case):
    op = make(case)
    x = rand_x()
    sigma = 0.1
    y = op.measure(x, sigma, torch.Generator().manual_seed(7))
    y_again = op.measure(x, sigma, torch.Generator().manual_seed(7))
    y_other = op.measure(x, sigma, torch.Generator().manual_seed(8))
    torch.testing.assert_close(y, y_again, rtol=0, atol=0)
    assert not torch.equal(y, y_other)
    noise = y - op(x)
    mask = op.known_mask()
    if mask is not None:  # noise on observed pixels only
        observed = mask.expand_as(noise).bool()
        assert noise[~observed].abs().max() == 0
        noise = noise[observed]
    assert noise.numel() > 50
    assert abs(noise.std().item() - sigma) < 0.35 * sigma
    torch.testing.assert_close(op.measure(x, 0.0, torch.Generator().manual_seed(7)), op(x))


def test_random_inpaint_ratio_and_mask_semantics():
    op = build_operator("random_inpaint", {"ratio": 0.75}, S, 1, num_images=3)
    mask = op.known_mask()
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(1 - mask.flatten(1).mean(1), torch.full((3,), 0.75))
    op_r = build_operator("random_inpaint", {"ratio_range": [0.2, 0.8]}, S, 1, num_images=8, seed=1)
    missing = 1 - op_r.known_mask().flatten(1).mean(1)
    assert missing.min() >= 0.2 - 1 / S**2 and missing.max() <= 0.8 + 1 / S**2
    assert missing.unique().numel() > 1


def test_box_and_outpaint_geometry():
    box = build_operator("box_inpaint", {"size": 4}, 8, 1).known_mask()[0, 0]
    assert box.shape == (8, 8)
    assert box[2:6, 2:6].sum() == 0 and box.sum() == 64 - 16
    left = build_operator("outpaint", {"keep": "left"}, 8, 1).known_mask()[0, 0]
    assert left[:, :4].min() == 1 and left[:, 4:].max() == 0
    bottom = build_operator("outpaint", {"keep": "bottom"}, 8, 1).known_mask()[0, 0]
    assert bottom[4:].min() == 1 and bottom[:4].max() == 0
    center = build_operator("outpaint", {"keep": "center", "fraction": 0.5}, 8, 1).known_mask()[0, 0]
    assert center[2:6, 2:6].min() == 1 and center.sum() == 16


def test_bands():
    assert make("identity").band == 1.0 and make("box_center").band == 1.0
    assert make("sr2_area").band == 0.5 and make("sr4_bicubic").band == 0.25
    assert make("blur").band == pytest.approx(1 / 3)
    assert build_operator("gaussian_blur", {"kernel_size": 3, "sigma": 0.2}, S, C).band == 1.0


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_round_trip(case):
    op = make(case)
    x = rand_x()
    buf = io.BytesIO()
    torch.save(op.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert set(state) == {"kind", "settings", "image_size", "channels", "tensors"}
    for restored in (Operator.from_state_dict(op.state_dict()), load_operator(state)):
        assert restored.kind == op.kind and restored.settings == op.settings and restored.band == op.band
        torch.testing.assert_close(restored(x), op(x), rtol=0, atol=0)
        y = torch.randn(op.y_shape(N))
        torch.testing.assert_close(restored.transpose(y), op.transpose(y), rtol=0, atol=0)


def test_state_dict_keeps_mask_data_not_seed():
    op = make("random_inpaint", seed=3)
    state = op.state_dict()
    state["tensors"]["mask"][0] = 1.0  # edited data must win over any re-derivation from settings
    assert load_operator(state).known_mask()[0].min() == 1


@pytest.mark.parametrize("case", ["random_inpaint", "box_random", "box_center", "blur"])
def test_select(case):
    op = make(case)
    x = rand_x()
    idx = [3, 1]
    sub = op.select(torch.tensor(idx))
    torch.testing.assert_close(sub(x[idx]), op(x)[idx], rtol=0, atol=0)
    if case in RANDOM_CASES:
        torch.testing.assert_close(sub.known_mask(), op.known_mask()[idx])
        assert sub.num_images == 2
        with pytest.raises(ValueError, match="per-image masks"):
            op(x[:2])
        with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\)"):
            op.select([7])
    else:
        assert sub.num_images is None
        assert sub(x[:1]).shape[0] == 1  # shared operators take any batch


@pytest.mark.parametrize("case", MASK_CASES)
def test_mask_pinv_recovers_known_pixels(case):
    op = make(case)
    x = rand_x()
    xp = op.pinv(op(x))
    mask = op.known_mask().expand_as(x).bool()
    torch.testing.assert_close(xp[mask], x[mask], rtol=0, atol=0)
    assert xp[~mask].abs().max() == 0


def test_superres_area_pinv_close_for_smooth_images():
    t = torch.linspace(0, 1, S)
    smooth = (0.8 * torch.sin(torch.pi * (t[:, None] + 0.5 * t[None, :]))).expand(2, C, S, S).contiguous()
    op = build_operator("superres", {"factor": 2}, S, C)
    err = (op.pinv(op(smooth)) - smooth).abs().mean()
    assert err < 0.1
    noisy = torch.rand(2, C, S, S, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert (op.pinv(op(noisy)) - noisy).abs().mean() > 2 * err  # only smooth images survive
    y = op(smooth)
    torch.testing.assert_close(op(op.pinv(y)), y)  # A A^+ = I


def test_mask_operator():
    m = torch.ones(S, S)
    m[:, : S // 2] = 0
    op = mask_operator(m, S, channels=C)
    assert op.kind == "mask" and op.num_images is None and op.band == 1.0
    x = rand_x()
    torch.testing.assert_close(op(x), x * m)
    per_image = mask_operator(torch.stack([m, 1 - m]).bool(), S, channels=C)
    assert per_image.num_images == 2
    assert load_operator(per_image.state_dict()).select([1]).known_mask()[0, 0].equal(1 - m)


def test_errors():
    with pytest.raises(ValueError, match=r"unknown operator kind 'jpeg'.*superres"):
        build_operator("jpeg", {}, S, C)
    with pytest.raises(ValueError, match="factor 3 does not divide image size 16"):
        build_operator("superres", {"factor": 3}, S, C)
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['radius'\]"):
        build_operator("gaussian_blur", {"kernel_size": 5, "sigma": 1.0, "radius": 2}, S, C)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        build_operator("gaussian_blur", {"kernel_size": 4, "sigma": 1.0}, S, C)
    with pytest.raises(ValueError, match="sigma must be"):
        build_operator("gaussian_blur", {"kernel_size": 5, "sigma": 0}, S, C)
    with pytest.raises(ValueError, match="ratio must be a number in"):
        build_operator("random_inpaint", {"ratio": 1.5}, S, C)
    with pytest.raises(ValueError, match="exactly one of"):
        build_operator("random_inpaint", {}, S, C)
    with pytest.raises(ValueError, match="position must be one of"):
        build_operator("box_inpaint", {"size": 4, "position": "corner"}, S, C)
    with pytest.raises(ValueError, match="keep must be one of"):
        build_operator("outpaint", {"keep": "middle"}, S, C)
    with pytest.raises(ValueError, match="mode must be one of"):
        build_operator("superres", {"factor": 2, "mode": "nearest"}, S, C)
    with pytest.raises(ValueError, match="mask is 8x8 but the images are 16x16"):
        mask_operator(torch.ones(8, 8), S)
    bad = torch.ones(S, S)
    bad[0, :3] = 0.5
    with pytest.raises(ValueError, match="3 non-binary values"):
        mask_operator(bad, S)
    with pytest.raises(ValueError, match="non-binary"):
        mask_operator(torch.full((S, S), 255, dtype=torch.uint8), S)


def test_check_y_rejects_foreign_measurements():
    sr = build_operator("superres", {"factor": 2}, S, C)
    box = build_operator("box_inpaint", {"size": 4}, S, C)
    y_box = box(rand_x())
    with pytest.raises(ValueError, match=r"y has shape \(4, 3, 16, 16\).*expects \(B, 3, 8, 8\)"):
        sr.check_y(y_box)
    with pytest.raises(ValueError, match="expects"):
        sr.transpose(y_box)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, 16, 16\)"):
        sr(torch.zeros(1, 1, S, S))
    per_image = make("random_inpaint")
    with pytest.raises(ValueError, match="batch 2 .* 4 per-image masks"):
        per_image.check_y(torch.zeros(2, C, S, S))
