"""Fitting a user's image to the model's square and putting the restoration back (pure functions).

A restoration runs at the model's resolution (``side`` x ``side``, or ``side / factor`` for the
super-resolution observation). :func:`fit_square` centre-crops the input to its largest square
and resizes it; :func:`paste_back` scales a restoration to that square (times the
super-resolution factor) and writes it into the full-size image, so the result has the input's
size, and its pixels outside the square are the input's own.

Images here are PIL images (mode ``L`` or ``RGB``); masks are bool arrays (H, W), True = to fill.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from scalewise.core.images import center_square


@dataclass(frozen=True)
class Placement:
    """Where the model's square sits in the input image (pixels of the input)."""

    top: int
    left: int
    side: int  # the crop square's side in the input
    size: tuple[int, int]  # the input's (width, height)

    def box(self, scale: int = 1) -> tuple[int, int, int, int]:
        """PIL box (left, top, right, bottom) of the square, in an image ``scale`` times the input."""
        return (self.left * scale, self.top * scale, (self.left + self.side) * scale, (self.top + self.side) * scale)


def fit_square(image: Image.Image, side: int) -> tuple[Image.Image, Placement]:
    """The centre square of ``image`` resized (bicubic) to ``side`` x ``side``, and where it came from."""
    width, height = image.size
    top, left, s = center_square(height, width)
    place = Placement(top, left, s, (width, height))
    crop = image.crop(place.box())
    return (crop if s == side else crop.resize((side, side), Image.BICUBIC)), place


def fit_mask(fill_HW: np.ndarray, place: Placement, side: int) -> np.ndarray:
    """A fill mask (H, W) bool of the input, cropped like :func:`fit_square` and resized (nearest) to ``side``."""
    crop = Image.fromarray(fill_HW.astype(np.uint8) * 255).crop(place.box())
    return np.asarray(crop.resize((side, side), Image.NEAREST)) > 127


def paste_back(original: Image.Image, restored: Image.Image, place: Placement, scale: int = 1,
               keep_HW: np.ndarray | None = None) -> Image.Image:
    """``restored`` (the model's square) at the input's size (times ``scale``), inside ``original``.

    Args:
        original: the input image (W, H); with ``scale`` > 1 (super-resolution) it is upsampled
            bicubically to (scale W, scale H) around the restored square.
        restored: one restoration, any square size; resized (bicubic) to the crop square.
        keep_HW: optional bool (H*scale, W*scale): pixels taken from ``original`` rather than
            the restoration (the observed ones of an inpainting).
    Returns: an image of ``original``'s mode and size (times ``scale``).
    """
    width, height = original.size
    base = original if scale == 1 else original.resize((width * scale, height * scale), Image.BICUBIC)
    out = base.copy()
    square = restored.convert(base.mode).resize((place.side * scale,) * 2, Image.BICUBIC)
    out.paste(square, place.box(scale)[:2])
    if keep_HW is not None:
        if keep_HW.shape != (base.size[1], base.size[0]):
            raise ValueError(f"keep mask is {keep_HW.shape[1]}x{keep_HW.shape[0]}, the image "
                             f"{base.size[0]}x{base.size[1]}")
        out = Image.composite(base, out, Image.fromarray(keep_HW.astype(np.uint8) * 255))
    return out
