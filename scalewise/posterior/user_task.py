"""A user's own restoration problem: their image (and mask) -> ``(operator, y)`` for the sampler.

Tasks (``USER_TASKS``), as ``scalewise restore --task`` names them:

- ``inpaint``: the image at model resolution plus a mask image of the same size, white (255)
  = missing pixels to fill, black (0) = kept (the usual convention of inpainting tools);
  ``y = x * keep``.
- ``outpaint``: keep one side (``left``/``right``/``top``/``bottom``) or the centre of the
  image and generate the rest.
- ``superres``: the image is the low-resolution observation ``y`` (model size / ``factor``).
- ``deblur``: the image is the Gaussian-blurred observation ``y`` (``kernel_size``, ``sigma``).

Images are float (1, C, H, W) in [-1, 1]; masks uint8 (1, 1, H, W) in 0..255.
"""

from __future__ import annotations

import torch

from scalewise.posterior.measurements import Operator, build_operator, mask_operator

USER_TASKS = ("inpaint", "outpaint", "superres", "deblur")


def check_task(task: str) -> str:
    if task not in USER_TASKS:
        raise ValueError(f"unknown task {task!r}; allowed: {list(USER_TASKS)}")
    return task


def observed_size(task: str, image_size: int, factor: int = 4) -> int:
    """Side (pixels) the input image must have for ``task`` with a model of ``image_size``."""
    check_task(task)
    if task == "superres":
        if factor < 2 or image_size % factor:
            raise ValueError(f"superres factor {factor} does not divide the model's image size {image_size}; "
                             f"pick a factor >= 2 dividing {image_size}")
        return image_size // factor
    return image_size


def keep_mask_from_png(mask_u8: torch.Tensor, image_hw: tuple[int, int], where: str = "mask") -> torch.Tensor:
    """A white-is-missing 0/255 mask (1, 1, H, W) -> float keep mask (1, 1, H, W), 1 = observed.

    Raises ValueError naming ``where`` when the mask's size differs from the image's or when it
    holds values other than 0 and 255 (grey anti-aliased edges included).
    """
    if tuple(mask_u8.shape[-2:]) != tuple(image_hw):
        raise ValueError(f"{where} is {mask_u8.shape[-1]}x{mask_u8.shape[-2]} but the image is "
                         f"{image_hw[1]}x{image_hw[0]}; the mask must have the image's size")
    values = torch.unique(mask_u8)
    bad = [int(v) for v in values if int(v) not in (0, 255)]
    if bad:
        raise ValueError(f"{where} must be binary: 0 (black, kept) or 255 (white, to fill), but has "
                         f"{len(bad)} other grey values (e.g. {bad[:5]}); threshold it first")
    if not bool((mask_u8 == 255).any()):
        raise ValueError(f"{where} marks no pixel to fill (no white pixel)")
    return (mask_u8 == 0).float()


def build_user_task(task: str, image: torch.Tensor, image_size: int, channels: int,
                    keep_mask: torch.Tensor | None = None, factor: int = 4, mode: str = "area",
                    keep: str = "left", kernel_size: int = 9, sigma: float = 2.0) -> tuple[Operator, torch.Tensor]:
    """``(operator, y)`` of a user's restoration problem.

    Args:
        image: (1, C, s, s) in [-1, 1], already at ``observed_size(task, image_size, factor)``.
        keep_mask: inpaint only: (1, 1, image_size, image_size), 1 = observed.
    Returns:
        The operator on (B, channels, image_size, image_size) images and ``y`` of its shape.
    """
    check_task(task)
    side = observed_size(task, image_size, factor)
    if image.dim() != 4 or tuple(image.shape[1:]) != (channels, side, side):
        raise ValueError(f"{task}: the image must have shape (1, {channels}, {side}, {side}) for a "
                         f"{image_size} px model, got {tuple(image.shape)}")
    if task == "inpaint":
        if keep_mask is None:
            raise ValueError("inpaint needs a mask (--mask mask.png: white = pixels to fill)")
        op = mask_operator(keep_mask, image_size, channels)
        return op, op(image)
    if keep_mask is not None:
        raise ValueError(f"a mask only applies to inpaint, not {task}")
    if task == "outpaint":
        op = build_operator("outpaint", {"keep": keep}, image_size, channels)
        return op, op(image)
    if task == "superres":
        return build_operator("superres", {"factor": factor, "mode": mode}, image_size, channels), image
    op = build_operator("gaussian_blur", {"kernel_size": kernel_size, "sigma": sigma}, image_size, channels)
    return op, image
