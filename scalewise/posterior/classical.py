"""Classical restorers (scikit-image): the model-free reference row of the inverse-problem table.

One restorer per operator family, none tuned on the test images:

- ``superres``: bicubic upsampling of ``y`` (``skimage.transform.resize``, order 3).
- ``gaussian_blur``: Wiener deconvolution with the operator's own kernel
  (``skimage.restoration.wiener``, Laplacian regulariser) on the [0, 1] scale. Rule for the
  regularisation, fixed in advance and never fitted to test images: ``balance`` = the noise std
  on the [0, 1] scale (``sigma_y / 2``, see :func:`wiener_balance`). On smooth synthetic images
  (noise std 0.01..0.2, kernel sigma 1 and 2, with and without downsampling) it scored higher
  than the self-tuning ``unsupervised_wiener`` in most cases and never below the
  pseudo-inverse, which ``unsupervised_wiener`` did with downsampling.
  Reflect padding keeps the FFT's circular boundary away from the image. With ``downsample >
  1``, ``y`` is first upsampled bicubically to the image size.
- mask kinds (``MASKING_KINDS``): biharmonic inpainting of the unobserved pixels
  (``skimage.restoration.inpaint_biharmonic``); observed pixels are kept as measured.
- ``identity``: ``y`` itself.

Images are float32 in [-1, 1]; the restorers work per image in float64 numpy and the results are
clipped to [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.restoration import inpaint_biharmonic, wiener
from skimage.transform import resize
from tqdm.auto import tqdm

from scalewise.posterior.measurements import MASKING_KINDS, Operator

QUANTISATION_STD = 1.0 / (255.0 * 12**0.5)  # std of 8-bit rounding noise on the [0, 1] scale
_PAD = 8  # reflect padding around a blurred image, so the FFT's circular boundary falls outside it


def biharmonic_inpaint(y_BCHW: torch.Tensor, known_B1HW: torch.Tensor, progress: bool = False) -> torch.Tensor:
    """Fill the unobserved pixels of ``y`` (B, C, H, W) by biharmonic inpainting; observed pixels stay.

    ``known_B1HW`` is (B or 1, 1, H, W) with 1 = observed; a shared mask (1, ...) is solved for
    the whole batch at once (the same result as image by image). Every unobserved pixel is filled; an
    image with no observed pixel at all becomes 0 (mid-grey). Returns (B, C, H, W) float32 on
    ``y``'s device, not clipped.
    """
    if y_BCHW.dim() != 4 or known_B1HW.dim() != 4 or known_B1HW.shape[1] != 1 \
            or known_B1HW.shape[0] not in (1, y_BCHW.shape[0]) or known_B1HW.shape[-2:] != y_BCHW.shape[-2:]:
        raise ValueError(f"biharmonic_inpaint: y must be (B, C, H, W) and the mask (B or 1, 1, H, W) of the same "
                         f"H, W; got y {tuple(y_BCHW.shape)}, mask {tuple(known_B1HW.shape)}")
    y_np = y_BCHW.detach().cpu().double().numpy()
    unknown_np = known_B1HW.detach().cpu().numpy()[:, 0] < 0.5  # (B or 1, H, W), True = fill
    if unknown_np.shape[0] == 1:  # one mask for all: one sparse factorisation, every image a right-hand side
        B, C, H, W = y_np.shape
        out_np = _inpaint_one(y_np.reshape(B * C, H, W), unknown_np[0]).reshape(B, C, H, W)
        return torch.from_numpy(np.ascontiguousarray(out_np)).float().to(y_BCHW.device)
    out_np = np.empty_like(y_np)
    for i in tqdm(range(y_np.shape[0]), desc="biharmonic inpaint", disable=not progress):
        unknown = unknown_np[i if unknown_np.shape[0] > 1 else 0]
        out_np[i] = _inpaint_one(y_np[i], unknown)
    return torch.from_numpy(out_np).float().to(y_BCHW.device)


def _inpaint_one(img_CHW: np.ndarray, unknown_HW: np.ndarray) -> np.ndarray:
    if not unknown_HW.any():
        return img_CHW
    if unknown_HW.all():
        return np.zeros_like(img_CHW)
    img = np.where(unknown_HW[None], 0.0, img_CHW)
    filled_HWC = inpaint_biharmonic(img.transpose(1, 2, 0), unknown_HW, channel_axis=-1)
    return filled_HWC.transpose(2, 0, 1)


def _bicubic_up(img_CHW: np.ndarray, size: int) -> np.ndarray:
    """(C, h, w) -> (C, size, size) by bicubic interpolation (pixel centres aligned, no antialiasing)."""
    return resize(img_CHW, (img_CHW.shape[0], size, size), order=3, mode="reflect", anti_aliasing=False)


def wiener_balance(sigma_y: float) -> float:
    """The Wiener balance for noise std ``sigma_y`` on the [-1, 1] scale: the std on the [0, 1] scale.

    Floored at the 8-bit quantisation noise ``1 / (255 sqrt(12))``, so noise-free measurements
    still get a little regularisation (the blur's transfer function has near-zeros).
    """
    return max(sigma_y / 2.0, QUANTISATION_STD)


def _deconvolve(img_CHW: np.ndarray, kernel_kk: np.ndarray, balance: float) -> np.ndarray:
    """Wiener deconvolution (Laplacian regulariser) per channel of a blurred (C, H, W) image in [-1, 1]."""
    out = np.empty_like(img_CHW)
    for c in range(img_CHW.shape[0]):
        unit_hw = (np.pad(img_CHW[c], _PAD, mode="reflect") + 1.0) / 2.0  # [0, 1], padded
        restored_hw = wiener(unit_hw, kernel_kk, balance, clip=False)
        out[c] = restored_hw[_PAD:-_PAD, _PAD:-_PAD] * 2.0 - 1.0
    return out


def classical_restore(operator: Operator, y: torch.Tensor, sigma_y: float, progress: bool = False) -> torch.Tensor:
    """The classical restoration (N, C, H, W) float32 in [-1, 1] of measurements ``y`` of ``operator``.

    ``y`` is (N, C, h, w) as ``operator`` measures it (:meth:`Operator.check_y` raises ValueError
    otherwise); ``sigma_y`` (>= 0) is its noise std on the [-1, 1] scale, used by the deblurring
    rule only. See the module docstring for the restorer of each operator kind.
    """
    operator.check_y(y)
    if not isinstance(sigma_y, (int, float)) or sigma_y < 0:
        raise ValueError(f"sigma_y must be a number >= 0 (noise std on the [-1, 1] scale), got {sigma_y!r}")
    kind, size = operator.kind, operator.image_size
    if kind in MASKING_KINDS:
        x_BCHW = biharmonic_inpaint(y, operator.known_mask().to(y.device), progress=progress)
        return x_BCHW.clamp(-1, 1)
    if kind == "identity":
        return y.float().clamp(-1, 1)
    if kind not in ("superres", "gaussian_blur"):
        raise ValueError(f"no classical restorer for operator kind {kind!r}; supported: superres, gaussian_blur, "
                         f"identity and the mask kinds {list(MASKING_KINDS)}")
    y_np = y.detach().cpu().double().numpy()
    out_np = np.empty((y_np.shape[0], operator.channels, size, size))
    kernel_kk = operator.tensors["kernel"].double().numpy() if kind == "gaussian_blur" else None
    for i in tqdm(range(y_np.shape[0]), desc=f"classical {kind}", disable=not progress):
        img_CHW = y_np[i] if y_np.shape[-1] == size else _bicubic_up(y_np[i], size)
        out_np[i] = img_CHW if kernel_kk is None else _deconvolve(img_CHW, kernel_kk, wiener_balance(sigma_y))
    return torch.from_numpy(out_np).float().clamp(-1, 1).to(y.device)
