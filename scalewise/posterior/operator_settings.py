"""Operator kinds and the checking / building of their settings (see :mod:`scalewise.posterior.measurements`).

``OPERATOR_KINDS``: the kinds built from settings alone; ``ANY_OPERATOR_KINDS`` adds ``mask``
(a user-supplied mask); ``MASKING_KINDS``: the kinds that observe ``y = x * mask``.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Sequence

import torch

OPERATOR_KINDS = ("identity", "random_inpaint", "box_inpaint", "outpaint", "gaussian_blur", "superres")
ANY_OPERATOR_KINDS = OPERATOR_KINDS + ("mask",)
MASKING_KINDS = ("random_inpaint", "box_inpaint", "outpaint", "mask")
OUTPAINT_KEEPS = ("center", "left", "right", "top", "bottom")
BOX_POSITIONS = ("center", "random")
SUPERRES_MODES = ("area", "bicubic")

_ALLOWED_KEYS: dict[str, tuple[str, ...]] = {
    "identity": (),
    "random_inpaint": ("ratio", "ratio_range"),
    "box_inpaint": ("size", "position"),
    "outpaint": ("keep", "fraction"),
    "gaussian_blur": ("kernel_size", "sigma", "downsample"),
    "superres": ("factor", "mode"),
    "mask": (),
}


# ----------------------------------------------------------------------------- validation


def _check_kind(kind: str, allowed: Sequence[str] = OPERATOR_KINDS) -> str:
    if kind not in allowed:
        raise ValueError(f"unknown operator kind {kind!r}; allowed: {list(allowed)}")
    return kind


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return _is_number(v) and float(v) == int(v)


def _positive_int(name: str, v: Any, minimum: int = 1) -> int:
    if not _is_int(v) or int(v) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _fraction(name: str, v: Any, lo: float = 0.0, hi: float = 1.0) -> float:
    if not _is_number(v) or not lo <= float(v) <= hi:
        raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {v!r}")
    return float(v)


def _normalise_settings(kind: str, settings: dict[str, Any] | None, image_size: int) -> dict[str, Any]:
    """Validated settings of ``kind`` with defaults filled in (JSON-serialisable)."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(_ALLOWED_KEYS[kind]))
    if unknown:
        raise ValueError(f"{kind}: unknown setting(s) {unknown}; allowed: {list(_ALLOWED_KEYS[kind])}")
    s = image_size
    if kind == "random_inpaint":
        if ("ratio" in settings) == ("ratio_range" in settings):
            raise ValueError("random_inpaint needs exactly one of 'ratio' (fraction of pixels missing, e.g. 0.7) "
                             "or 'ratio_range' ([lo, hi])")
        if "ratio" in settings:
            return {"ratio": _fraction("random_inpaint ratio", settings["ratio"])}
        rr = settings["ratio_range"]
        if not isinstance(rr, (list, tuple)) or len(rr) != 2:
            raise ValueError(f"random_inpaint ratio_range must be [lo, hi], got {rr!r}")
        lo, hi = (_fraction("random_inpaint ratio_range", v) for v in rr)
        if lo > hi:
            raise ValueError(f"random_inpaint ratio_range must have lo <= hi, got {list(rr)}")
        return {"ratio_range": [lo, hi]}
    if kind == "box_inpaint":
        if "size" not in settings:
            raise ValueError("box_inpaint needs 'size' (box side in pixels, or a fraction in (0, 1) of the image side)")
        size = settings["size"]
        if _is_number(size) and 0 < float(size) < 1:
            size = float(size)
        elif _is_int(size) and 1 <= int(size) <= s:
            size = int(size)
        else:
            raise ValueError(f"box_inpaint size must be an integer in [1, {s}] (pixels) or a fraction in (0, 1) "
                             f"of the image side, got {size!r}")
        position = settings.get("position", "center")
        if position not in BOX_POSITIONS:
            raise ValueError(f"box_inpaint position must be one of {list(BOX_POSITIONS)}, got {position!r}")
        return {"size": size, "position": position}
    if kind == "outpaint":
        keep = settings.get("keep", "center")
        if keep not in OUTPAINT_KEEPS:
            raise ValueError(f"outpaint keep must be one of {list(OUTPAINT_KEEPS)}, got {keep!r}")
        if keep != "center":
            if "fraction" in settings:
                raise ValueError(f"outpaint fraction only applies to keep='center' (keep={keep!r} keeps a half)")
            return {"keep": keep}
        fraction = settings.get("fraction", 0.5)
        if not _is_number(fraction) or not 0 < float(fraction) <= 1:
            raise ValueError(f"outpaint fraction must be a number in (0, 1], got {fraction!r}")
        return {"keep": keep, "fraction": float(fraction)}
    if kind == "gaussian_blur":
        for key in ("kernel_size", "sigma"):
            if key not in settings:
                raise ValueError(f"gaussian_blur needs '{key}' (settings: kernel_size odd int, sigma > 0 pixels, "
                                 "optional downsample int >= 1)")
        k = _positive_int("gaussian_blur kernel_size", settings["kernel_size"])
        if k % 2 == 0:
            raise ValueError(f"gaussian_blur kernel_size must be odd, got {k}")
        if k // 2 >= s:
            raise ValueError(f"gaussian_blur kernel_size {k} is too large for image size {s} "
                             f"(reflect padding needs kernel_size <= {2 * s - 1})")
        sigma = settings["sigma"]
        if not _is_number(sigma) or not float(sigma) > 0 or not math.isfinite(float(sigma)):
            raise ValueError(f"gaussian_blur sigma must be a finite number > 0 (pixels), got {sigma!r}")
        d = _positive_int("gaussian_blur downsample", settings.get("downsample", 1))
        if s % d:
            raise ValueError(f"gaussian_blur downsample {d} must divide image size {s}")
        return {"kernel_size": k, "sigma": float(sigma), "downsample": d}
    if kind == "superres":
        if "factor" not in settings:
            raise ValueError("superres needs 'factor' (integer >= 2 dividing the image size, e.g. 2 or 4)")
        f = _positive_int("superres factor", settings["factor"], minimum=2)
        if s % f:
            raise ValueError(f"superres factor {f} does not divide image size {s}; pick a factor dividing {s}")
        mode = settings.get("mode", "area")
        if mode not in SUPERRES_MODES:
            raise ValueError(f"superres mode must be one of {list(SUPERRES_MODES)}, got {mode!r}")
        return {"factor": f, "mode": mode}
    return settings  # identity, mask: no settings


# ----------------------------------------------------------------------------- data builders


def _random_masks(ratios: list[float], size: int, gen: torch.Generator) -> torch.Tensor:
    """(N, 1, H, W) float32 masks, 1 = observed, exactly ``round(ratio * H * W)`` pixels missing each."""
    masks = torch.ones(len(ratios), size * size)
    for i, r in enumerate(ratios):
        missing = torch.randperm(size * size, generator=gen)[: round(r * size * size)]
        masks[i, missing] = 0.0
    return masks.view(-1, 1, size, size)


def _build_mask(kind: str, st: dict[str, Any], size: int, num_images: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "random_inpaint":
        if "ratio" in st:
            ratios = [st["ratio"]] * num_images
        else:
            lo, hi = st["ratio_range"]
            ratios = (lo + (hi - lo) * torch.rand(num_images, generator=gen, dtype=torch.float64)).tolist()
        return _random_masks(ratios, size, gen)
    if kind == "box_inpaint":
        side = st["size"] if isinstance(st["size"], int) else max(1, round(st["size"] * size))
        if st["position"] == "center":
            tops = lefts = [(size - side) // 2]
        else:
            corners = torch.randint(0, size - side + 1, (num_images, 2), generator=gen)
            tops, lefts = corners[:, 0].tolist(), corners[:, 1].tolist()
        mask = torch.ones(len(tops), 1, size, size)
        for i, (t, l) in enumerate(zip(tops, lefts)):
            mask[i, :, t:t + side, l:l + side] = 0.0
        return mask
    # outpaint
    mask = torch.zeros(1, 1, size, size)
    keep, half = st["keep"], size // 2
    if keep == "center":
        side = max(1, round(st["fraction"] * size))
        a = (size - side) // 2
        mask[..., a:a + side, a:a + side] = 1.0
    elif keep == "left":
        mask[..., :, :half] = 1.0
    elif keep == "right":
        mask[..., :, half:] = 1.0
    elif keep == "top":
        mask[..., :half, :] = 1.0
    else:
        mask[..., half:, :] = 1.0
    return mask


def gaussian_kernel(kernel_size: int, sigma: float) -> torch.Tensor:
    """Normalised 2-D Gaussian kernel (k, k), float32, summing to 1."""
    t = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).float()
