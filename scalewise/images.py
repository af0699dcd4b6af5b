"""Image tensors <-> PNG files (always PNG, written atomically)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scalewise.io import atomic_path


def to_unit(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) in 0..255 -> float32 in [-1, 1], same shape."""
    return images_u8.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] (N, C, H, W) -> uint8 0..255, same shape."""
    return images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu()


def save_png(image_u8_CHW: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save one uint8 image (C, H, W), C = 1 (grey) or 3 (RGB), as a PNG atomically."""
    array = image_u8_CHW.permute(1, 2, 0).numpy()
    mode = "L" if array.shape[2] == 1 else "RGB"
    img = Image.fromarray(np.ascontiguousarray(array[..., 0] if mode == "L" else array), mode=mode)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8, pad: int = 2) -> Path:
    """Save float images in [-1, 1] (N, C, H, W) as one PNG grid with ``nrow`` images per row."""
    from torchvision.utils import make_grid  # imported here: torchvision takes ~2 s to import
    grid = make_grid(to_uint8(images), nrow=nrow, padding=pad, pad_value=128)  # (3, H', W')
    if images.shape[1] == 1:
        grid = grid[:1]
    return save_png(grid, path)
