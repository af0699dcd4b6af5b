"""Classical restorers (scikit-image): beat the pseudo-inverse on smooth images, keep observed pixels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scalewise.core.metrics import psnr
from scalewise.posterior.classical import biharmonic_inpaint, classical_restore
from scalewise.posterior.tasks import STANDARD_TASKS, task_operator

SIZE, N, SIGMA_Y = 32, 6, 0.05
TASKS = {**STANDARD_TASKS,
         "deblur_down2": {"kind": "gaussian_blur", "kernel_size": 9, "sigma": 1.0, "downsample": 2}}


def smooth_fields(n: int, channels: int, seed: int = 0) -> torch.Tensor:
    """Blurred white noise (n, C, SIZE, SIZE), scaled to peak at +-0.9."""
    noise = torch.randn(n * channels, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    t = torch.arange(-6, 7, dtype=torch.float32)
    g = torch.exp(-t**2 / 8.0)
    k_11kk = (g[:, None] * g[None] / g.sum() ** 2)[None, None]
    x = F.conv2d(F.pad(noise, (6,) * 4, mode="circular"), k_11kk).view(n, channels, SIZE, SIZE)
    return 0.9 * x / x.flatten(1).abs().amax(1).view(n, 1, 1, 1)


def disks(n: int, channels: int, seed: int = 0) -> torch.Tensor:
    """Three flat disks per image on a -1 background (n, C, SIZE, SIZE)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    x = -torch.ones(n, channels, SIZE, SIZE)
    for i in range(n):
        for _ in range(3):
            cy, cx = torch.randint(6, SIZE - 6, (2,), generator=g).tolist()
            r = int(torch.randint(3, 8, (1,), generator=g))
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            x[i][:, inside] = (torch.rand(channels, generator=g) * 1.6 - 0.6)[:, None]
    return x


IMAGES = {"smooth": smooth_fields, "disks": disks}


def _measure(task: str, images: str, channels: int):
    x = IMAGES[images](N, channels)
    op = task_operator(task, TASKS[task], SIZE, channels, num_images=N, seed=1)
    y = op.measure(x, SIGMA_Y, torch.Generator().manual_seed(2))
    return x, op, y


# outpainting extrapolates: on zero-mean smooth fields nothing beats the mid-grey zero fill
CASES = [(t, im) for t in TASKS for im in IMAGES if not (t == "outpaint" and im == "smooth")]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("task,images", CASES)
def test_classical_beats_the_pseudo_inverse(task, images, channels):
    x, op, y = _measure(task, images, channels)
    restored = classical_restore(op, y, SIGMA_Y)
    assert restored.shape == x.shape and restored.dtype == torch.float32
    assert restored.min() >= -1 and restored.max() <= 1
    ours, naive = psnr(restored, x).mean().item(), psnr(op.pinv(y).clamp(-1, 1), x).mean().item()
    assert ours > naive + 0.25, f"{task} on {images}: classical {ours:.2f} dB vs pinv {naive:.2f} dB"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("task", ["box_inpaint", "random_inpaint", "outpaint"])
def test_masks_keep_observed_pixels(task, channels):
    x, op, y = _measure(task, "disks", channels)
    restored = classical_restore(op, y, SIGMA_Y)
    observed = op.known_mask().expand_as(x) > 0
    torch.testing.assert_close(restored[observed], y.clamp(-1, 1)[observed])
    assert (restored - x)[observed].abs().max() < 6 * SIGMA_Y  # within the noise


def test_identity_and_wrong_shapes():
    x = smooth_fields(2, 1)
    op = task_operator("id", {"kind": "identity"}, SIZE, 1, num_images=2)
    torch.testing.assert_close(classical_restore(op, x, 0.0), x)
    sr4 = task_operator("sr_x4", TASKS["sr_x4"], SIZE, 1)
    with pytest.raises(ValueError, match=r"expects \(B, 1, 8, 8\)"):
        classical_restore(sr4, torch.zeros(2, 1, 16, 16), SIGMA_Y)
    with pytest.raises(ValueError, match="sigma_y"):
        classical_restore(sr4, torch.zeros(2, 1, 8, 8), -1.0)


def test_biharmonic_inpaint_fills_every_pixel_and_is_per_image():
    x = disks(2, 3)
    known = torch.zeros(2, 1, SIZE, SIZE)
    known[0, :, :, : SIZE // 2] = 1  # image 0: left half observed; image 1: nothing observed
    filled = biharmonic_inpaint(x * known, known)
    assert filled.shape == x.shape and torch.isfinite(filled).all()
    torch.testing.assert_close(filled[0, :, :, : SIZE // 2], x[0, :, :, : SIZE // 2])
    assert torch.equal(filled[1], torch.zeros_like(filled[1]))  # no evidence: mid-grey
    with pytest.raises(ValueError, match="mask"):
        biharmonic_inpaint(x, known[:, :, :8])


def test_a_shared_mask_is_filled_for_the_whole_batch_as_image_by_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 2, 12, 12, generator=g) * 2 - 1
    known = (torch.rand(1, 1, 12, 12, generator=g) > 0.6).float()
    batch = biharmonic_inpaint(x * known, known)
    one_by_one = torch.cat([biharmonic_inpaint(x[i:i + 1] * known, known) for i in range(5)])
    torch.testing.assert_close(batch, one_by_one, atol=1e-6, rtol=0)
    torch.testing.assert_close(batch * known, x * known, atol=1e-6, rtol=0)
