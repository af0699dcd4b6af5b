"""Image tensors <-> PNG files (always PNG, written atomically)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scalewise.core.io import atomic_path


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


def center_square(height: int, width: int) -> tuple[int, int, int]:
    """``(top, left, side)`` of the largest centred square in a ``height`` x ``width`` image (pixels)."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def _too_large(path: Path, exc: Exception) -> str:
    """The error for a file whose header claims more pixels than Pillow's decompression-bomb limit."""
    return f"{path}: refused by Pillow's decompression-bomb guard ({exc}); downscale the image first"


def load_image(path: str | os.PathLike, channels: int, size: int | None = None,
               resample: int = Image.BICUBIC) -> torch.Tensor:
    """Read an image file as float32 (1, C, H, W) in [-1, 1], ``channels`` 1 (grey) or 3 (RGB).

    With ``size`` the image is centre-cropped to a square and resized to ``size`` x ``size``.
    Raises FileNotFoundError / ValueError naming the file when it is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as img:
            img.load()
            img = img.convert("L" if channels == 1 else "RGB")
    except Image.DecompressionBombError as exc:
        raise ValueError(_too_large(path, exc)) from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc
    if size is not None and img.size != (size, size):
        top, left, side = center_square(img.size[1], img.size[0])
        img = img.crop((left, top, left + side, top + side)).resize((size, size), resample)
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    return to_unit(torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0))


def load_mask(path: str | os.PathLike) -> torch.Tensor:
    """A mask PNG as uint8 (1, 1, H, W) with its raw grey values 0..255 (validated by the caller)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such mask file")
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("L"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise ValueError(_too_large(path, exc)) from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc
    return torch.from_numpy(array.copy())[None, None]


def from_pil(image: Image.Image, channels: int) -> torch.Tensor:
    """A PIL image as float32 (1, C, H, W) in [-1, 1], converted to ``channels`` 1 (grey) or 3 (RGB)."""
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    return to_unit(torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0))


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Float images in [-1, 1] (N, C, H, W), C = 1 or 3 -> N PIL images (mode ``L`` or ``RGB``)."""
    out = []
    for img in to_uint8(images):
        array = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
        out.append(Image.fromarray(array[..., 0], mode="L") if array.shape[2] == 1 else Image.fromarray(array, "RGB"))
    return out


def open_image(path: str | os.PathLike) -> Image.Image:
    """An image file, fully read; FileNotFoundError / ValueError name the file (decompression bombs too)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except Image.DecompressionBombError as exc:
        raise ValueError(_too_large(path, exc)) from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc
