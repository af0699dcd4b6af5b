"""Differentiable linear measurement operators ``y = A(x) (+ noise)`` on image batches (pure torch).

Images ``x_BCHW`` are float32 in [-1, 1], square (``image_size``). Every operator is linear in
``x`` and differentiable; its exact adjoint ``A^T`` comes from autograd (``torch.func.vjp``).

Kinds (``OPERATOR_KINDS``, settings checked in :mod:`scalewise.posterior.operator_settings`, built from JSON-like settings by :func:`build_operator`):

- ``identity``: ``y = x``.
- ``random_inpaint``: ``ratio`` (fraction of pixels MISSING) or ``ratio_range: [lo, hi]`` (each
  image draws its ratio uniformly); one seeded mask per image, shared across channels.
- ``box_inpaint``: a missing square of side ``size`` (pixels, or a fraction in (0, 1) of the image
  side) at ``position`` ``"center"`` (one shared mask) or ``"random"`` (one seeded mask per image).
- ``outpaint``: ``keep`` ``"center"`` (a centred square of side ``fraction`` * image_size, default
  0.5) or ``"left"``/``"right"``/``"top"``/``"bottom"`` (that half); the rest is missing.
- ``gaussian_blur``: ``kernel_size`` (odd), ``sigma`` (pixels) and optional ``downsample`` (keep
  every ``downsample``-th pixel after blurring); reflect padding, ``y`` is (B, C, H/d, W/d).
- ``superres``: ``factor`` (integer >= 2 dividing the image size) and ``mode`` ``"area"``
  (average pooling, default) or ``"bicubic"`` (antialiased bicubic); ``y`` is (B, C, H/f, W/f).

User-supplied masks (:func:`mask_operator`) have the extra kind ``"mask"`` (in
``ANY_OPERATOR_KINDS``, not in ``OPERATOR_KINDS``: it cannot be built from settings alone).

Mask-type operators (``random_inpaint``, ``box_inpaint``, ``outpaint``, ``mask``) compute
``y = x * mask`` (1 = observed) at full size: unobserved pixels of ``y`` are 0. Their masks are
either shared (1, 1, H, W) or per image (N, 1, H, W); a per-image operator takes batches of
exactly N images (use :meth:`Operator.select` for a subset).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from scalewise.posterior.operator_settings import (  # noqa: F401  (OPERATOR_KINDS: re-exported)
    ANY_OPERATOR_KINDS, MASKING_KINDS, OPERATOR_KINDS, _build_mask, _check_kind, _is_int, _is_number, _normalise_settings, _positive_int, gaussian_kernel,
)


# ----------------------------------------------------------------------------- operator


class Operator:
    """A linear measurement ``A`` on (B, C, image_size, image_size) images in [-1, 1].

    Build one with :func:`build_operator`, :func:`mask_operator` or :meth:`from_state_dict`.

    Attributes:
        kind: one of ``ANY_OPERATOR_KINDS``.
        settings: the validated, JSON-serialisable settings (defaults filled in).
        image_size, channels: the image shape it measures.
        band: fraction (0, 1] of the full frequency band the measurement keeps: 1 for identity and
            masks, 1/factor for superres, ``min(1, 1/(2 sigma), 1/downsample)`` for gaussian_blur.
        tensors: its data (``mask`` (N or 1, 1, H, W) for mask kinds, ``kernel`` (k, k) for blur).
    """

    def __init__(self, kind: str, settings: dict[str, Any], image_size: int, channels: int,
                 tensors: dict[str, torch.Tensor] | None = None):
        _check_kind(kind, ANY_OPERATOR_KINDS)
        self.kind = kind
        self.image_size = _positive_int("image_size", image_size)
        self.channels = _positive_int("channels", channels)
        self.settings = _normalise_settings(kind, settings, self.image_size)
        self.tensors = {k: v.detach().clone() for k, v in (tensors or {}).items()}
        s = self.image_size
        need = {"mask": (1, s, s)} if kind in MASKING_KINDS else {"kernel": None} if kind == "gaussian_blur" else {}
        if sorted(self.tensors) != sorted(need):
            raise ValueError(f"{kind} operator needs tensors {sorted(need)}, got {sorted(self.tensors)}")
        if "mask" in need:
            m = self.tensors["mask"]
            if m.dim() != 4 or tuple(m.shape[1:]) != (1, s, s):
                raise ValueError(f"{kind} mask must have shape (N, 1, {s}, {s}), got {tuple(m.shape)}")
            self.tensors["mask"] = m.float()
        if "kernel" in need:
            k = self.settings["kernel_size"]
            if tuple(self.tensors["kernel"].shape) != (k, k):
                raise ValueError(f"gaussian_blur kernel must have shape ({k}, {k}), "
                                 f"got {tuple(self.tensors['kernel'].shape)}")
            self.tensors["kernel"] = self.tensors["kernel"].float()
        self.band = self._band()

    # -- properties

    def _band(self) -> float:
        if self.kind == "superres":
            return 1.0 / self.settings["factor"]
        if self.kind == "gaussian_blur":
            return min(1.0, 1.0 / (2.0 * self.settings["sigma"]), 1.0 / self.settings["downsample"])
        return 1.0

    @property
    def num_images(self) -> int | None:
        """Number of per-image masks, or None when the operator is the same for every image."""
        m = self.tensors.get("mask")
        return None if m is None or m.shape[0] == 1 else int(m.shape[0])

    @property
    def out_size(self) -> int:
        """Side of ``y``."""
        if self.kind == "superres":
            return self.image_size // self.settings["factor"]
        if self.kind == "gaussian_blur":
            return self.image_size // self.settings["downsample"]
        return self.image_size

    def __repr__(self) -> str:
        n = "" if self.num_images is None else f", num_images={self.num_images}"
        return (f"Operator({self.kind!r}, {self.settings}, image_size={self.image_size}, "
                f"channels={self.channels}{n})")

    # -- shapes

    def y_shape(self, batch: int) -> tuple[int, int, int, int]:
        """Shape of ``y`` for ``batch`` images: (B, C, h, w)."""
        return (batch, self.channels, self.out_size, self.out_size)

    def _check_batch(self, batch: int, what: str) -> None:
        n = self.num_images
        if n is not None and batch != n:
            raise ValueError(f"{what} has batch {batch} but this {self.kind} operator holds {n} per-image masks; "
                             "pass all of them or use operator.select(indices) for a subset")

    def _check_x(self, x_BCHW: torch.Tensor) -> None:
        s, C = self.image_size, self.channels
        if x_BCHW.dim() != 4 or tuple(x_BCHW.shape[1:]) != (C, s, s):
            raise ValueError(f"x must have shape (B, {C}, {s}, {s}), got {tuple(x_BCHW.shape)}")
        self._check_batch(x_BCHW.shape[0], "x")

    def check_y(self, y: torch.Tensor) -> None:
        """Raise ValueError if ``y`` does not have this operator's measurement shape."""
        if y.dim() != 4 or tuple(y.shape[1:]) != self.y_shape(0)[1:]:
            _, C, h, w = self.y_shape(0)
            raise ValueError(f"y has shape {tuple(y.shape)} but this {self.kind} operator expects (B, {C}, {h}, {w}); "
                             "was y measured by another operator?")
        self._check_batch(y.shape[0], "y")

    # -- the map

    def _mask_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.tensors["mask"].to(device=x.device, dtype=x.dtype)

    def _apply(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        kind, st = self.kind, self.settings
        if kind in MASKING_KINDS:
            return x_BCHW * self._mask_like(x_BCHW)
        if kind == "gaussian_blur":
            k = st["kernel_size"]
            C = x_BCHW.shape[1]
            w = self.tensors["kernel"].to(device=x_BCHW.device, dtype=x_BCHW.dtype).expand(C, 1, k, k)
            xp = F.pad(x_BCHW, (k // 2,) * 4, mode="reflect") if k > 1 else x_BCHW
            return F.conv2d(xp, w, stride=st["downsample"], groups=C)
        if kind == "superres":
            f = st["factor"]
            if st["mode"] == "area":
                return F.avg_pool2d(x_BCHW, f)
            return F.interpolate(x_BCHW, size=(self.out_size, self.out_size), mode="bicubic",
                                 align_corners=False, antialias=True)
        return x_BCHW  # identity

    def __call__(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """``A(x)``: (B, C, H, W) -> ``y_shape(B)``; linear, differentiable, no noise."""
        self._check_x(x_BCHW)
        return self._apply(x_BCHW)

    def measure(self, x_BCHW: torch.Tensor, sigma_y: float, generator: torch.Generator) -> torch.Tensor:
        """``A(x) + sigma_y * n``, ``n ~ N(0, 1)`` drawn from ``generator`` (sigma_y on the [-1, 1] scale).

        For mask kinds the noise falls on observed pixels only: ``y`` stays 0 where unobserved.
        """
        if not _is_number(sigma_y) or sigma_y < 0:
            raise ValueError(f"sigma_y must be a number >= 0, got {sigma_y!r}")
        y = self(x_BCHW)
        noise = torch.randn(y.shape, generator=generator, device=generator.device, dtype=y.dtype).to(y.device)
        if self.kind in MASKING_KINDS:
            noise = noise * self._mask_like(noise)
        return y + sigma_y * noise

    def transpose(self, y: torch.Tensor) -> torch.Tensor:
        """The exact adjoint ``A^T y`` (B, C, H, W), from autograd: ``<A x, y> == <x, A^T y>``."""
        self.check_y(y)
        x0 = torch.zeros((y.shape[0], self.channels, self.image_size, self.image_size), dtype=y.dtype, device=y.device)
        _, vjp_fn = torch.func.vjp(self._apply, x0)
        return vjp_fn(y)[0]

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """A simple pseudo-inverse (B, C, H, W) for baselines.

        Masks: ``y`` with unobserved pixels 0. Superres: nearest (area mode, the exact
        pseudo-inverse of average pooling) or antialias-free bicubic (bicubic mode) upsampling.
        Blur: ``y`` itself (nearest-upsampled when it downsamples). Identity: ``y``.
        """
        self.check_y(y)
        size = (self.image_size, self.image_size)
        if self.kind in MASKING_KINDS:
            return y * self._mask_like(y)
        if self.kind == "superres":
            if self.settings["mode"] == "area":
                return F.interpolate(y, size=size, mode="nearest")
            return F.interpolate(y, size=size, mode="bicubic", align_corners=False)
        if self.kind == "gaussian_blur" and self.settings["downsample"] > 1:
            return F.interpolate(y, size=size, mode="nearest")
        return y

    def known_mask(self) -> torch.Tensor | None:
        """Pixel mask (N or 1, 1, H, W), float32, 1 = observed, for mask kinds; None otherwise."""
        m = self.tensors.get("mask")
        return None if m is None else m.clone()

    # -- subsets, devices, persistence

    def select(self, idx: torch.Tensor | Sequence[int]) -> Operator:
        """The operator for images ``idx`` (per-image masks subset; shared data unchanged)."""
        idx_t = torch.as_tensor(idx, dtype=torch.long).flatten().cpu()
        n = self.num_images
        if n is None:
            return Operator(self.kind, self.settings, self.image_size, self.channels, self.tensors)
        if idx_t.numel() and (idx_t.min() < -n or idx_t.max() >= n):
            raise ValueError(f"select: indices must lie in [0, {n}) for this operator with {n} per-image masks, "
                             f"got min {int(idx_t.min())}, max {int(idx_t.max())}")
        tensors = dict(self.tensors, mask=self.tensors["mask"][idx_t])
        return Operator(self.kind, self.settings, self.image_size, self.channels, tensors)

    def to(self, device: torch.device | str) -> Operator:
        """A copy with its masks/kernels on ``device`` (operators also move them to x's device on the fly)."""
        op = Operator(self.kind, self.settings, self.image_size, self.channels, self.tensors)
        op.tensors = {k: v.to(device) for k, v in op.tensors.items()}
        return op

    def state_dict(self) -> dict[str, Any]:
        """``{"kind", "settings", "image_size", "channels", "tensors"}``; tensors on CPU (``weights_only`` safe)."""
        return {"kind": self.kind, "settings": _copy_settings(self.settings), "image_size": self.image_size,
                "channels": self.channels, "tensors": {k: v.detach().cpu().clone() for k, v in self.tensors.items()}}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Operator:
        """Rebuild an operator saved with :meth:`state_dict` (exactly: masks/kernels come from the data)."""
        if not isinstance(state, dict):
            raise ValueError(f"operator state must be a dict from Operator.state_dict(), got {type(state).__name__}")
        missing = [k for k in ("kind", "settings", "image_size", "channels", "tensors") if k not in state]
        if missing:
            raise ValueError(f"operator state lacks {missing}; expected the dict from Operator.state_dict()")
        return cls(state["kind"], state["settings"], state["image_size"], state["channels"], state["tensors"])


def _copy_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in settings.items()}


def load_operator(state: dict[str, Any]) -> Operator:
    """Same as :meth:`Operator.from_state_dict`."""
    return Operator.from_state_dict(state)


def build_operator(kind: str, settings: dict[str, Any] | None, image_size: int, channels: int,
                   num_images: int = 1, seed: int = 0) -> Operator:
    """An operator of ``kind`` (one of ``OPERATOR_KINDS``) from its settings (see the module docstring).

    Random kinds (``random_inpaint``; ``box_inpaint`` with ``position: random``) draw
    ``num_images`` per-image masks from ``seed`` (deterministic); the others are shared.
    """
    _check_kind(kind, OPERATOR_KINDS)
    image_size = _positive_int("image_size", image_size)
    _positive_int("channels", channels)
    num_images = _positive_int("num_images", num_images)
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    st = _normalise_settings(kind, settings, image_size)
    tensors: dict[str, torch.Tensor] = {}
    if kind in MASKING_KINDS:
        tensors["mask"] = _build_mask(kind, st, image_size, num_images, int(seed))
    elif kind == "gaussian_blur":
        tensors["kernel"] = gaussian_kernel(st["kernel_size"], st["sigma"])
    return Operator(kind, st, image_size, channels, tensors)


def mask_operator(mask: torch.Tensor, image_size: int, channels: int = 1) -> Operator:
    """A ``"mask"`` operator from a user mask: (H, W), (1, H, W) / (N, H, W) or (N, 1, H, W); 1 = observed.

    The mask must be ``image_size`` square and binary {0, 1} (bool or numbers); N > 1 gives a
    per-image operator.
    """
    image_size = _positive_int("image_size", image_size)
    m = torch.as_tensor(mask)
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    elif m.dim() != 4 or m.shape[1] != 1:
        raise ValueError(f"mask must have shape (H, W), (N, H, W) or (N, 1, H, W), got {tuple(m.shape)}")
    if m.shape[0] < 1:
        raise ValueError("mask is empty (N = 0)")
    if tuple(m.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"mask is {m.shape[-2]}x{m.shape[-1]} but the images are {image_size}x{image_size}; "
                         "resize the mask to the image size")
    m = m.float()
    bad = int(((m != 0) & (m != 1)).sum())
    if bad:
        raise ValueError(f"mask must be binary {{0, 1}} (1 = observed) but has {bad} non-binary values "
                         f"(range {float(m.nan_to_num().min())}..{float(m.nan_to_num().max())}); "
                         "for an 8-bit mask image with values 0/255, divide by 255 first")
    return Operator("mask", {}, image_size, channels, {"mask": m})
