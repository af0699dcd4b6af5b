"""The measurement model ``y = A(x) + n``, ``n ~ N(0, sigma_y^2 I)``: the guidance's likelihood.

``A`` is either a built-in :class:`~scalewise.posterior.measurements.Operator` (its hints come
with it) or any differentiable callable mapping images (B, C, H, W) in [-1, 1] to a tensor
with batch dimension B: a user-defined blur, a colour-to-grey map, a non-linear sensor.
Optional hints enable more of the sampler:

- ``band`` (fraction (0, 1] of the frequency band ``A`` keeps): the frequency-aware filter;
- ``known_mask`` ((N or 1, 1, H, W), 1 = observed) and ``pinv`` (a map from ``y`` to image
  space): token clamping (``clamp``, ``clamp+guided``);
- ``pinv`` that is an exact pseudo-inverse (``A(pinv(r)) == r``): the data-consistency
  projection ``guided+dc``.

Without hints guidance still runs. The data term is ``||A(x) - y||^2 / (2 sigma_y^2)`` per
sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from scalewise.posterior.filters import FrequencyAwareFilter
from scalewise.posterior.measurements import MASKING_KINDS, Operator

ImageMap = Callable[[torch.Tensor], torch.Tensor]


class MeasurementModel:
    """``y = A(x) + N(0, sigma_y^2)``, with the hints the sampler can use.

    Args:
        operator: an :class:`Operator` or a differentiable callable ``A``.
        sigma_y: noise std on the [-1, 1] image scale (> 0; the likelihood's width).
        band, known_mask, pinv: hints for a callable (taken from an ``Operator`` when None).
        exact_pinv: ``pinv`` is an exact pseudo-inverse (enables ``guided+dc``).
        filter: a frequency-aware filter of the residual (needs ``band``), or None.
    """

    def __init__(self, operator: Operator | ImageMap, sigma_y: float = 0.05, *, band: float | None = None,
                 known_mask: torch.Tensor | None = None, pinv: ImageMap | None = None, exact_pinv: bool = False,
                 filter: FrequencyAwareFilter | None = None, low_band_weight: float = 1.0,
                 high_band_weight: float = 0.0):
        if not callable(operator):
            raise TypeError(f"operator must be an Operator or a callable images -> measurements, "
                            f"got {type(operator).__name__}")
        if not (isinstance(sigma_y, (int, float)) and sigma_y > 0 and math.isfinite(sigma_y)):
            raise ValueError(f"sigma_y must be a number > 0 (the measurement noise std), got {sigma_y!r}; "
                             "for noiseless data use a small value such as 0.01")
        self.operator = operator
        self.sigma_y = float(sigma_y)
        self.builtin = operator if isinstance(operator, Operator) else None
        op = self.builtin
        self.band = band if band is not None else (op.band if op is not None else None)
        if self.band is not None and not 0.0 < self.band <= 1.0:
            raise ValueError(f"band must lie in (0, 1], got {self.band}")
        self._known = known_mask if known_mask is not None else (op.known_mask() if op is not None else None)
        self._pinv = pinv if pinv is not None else (op.pinv if op is not None else None)
        self.exact_pinv = exact_pinv or (op is not None and (op.kind in MASKING_KINDS or op.kind == "identity" or
                                                             (op.kind == "superres" and op.settings["mode"] == "area")))
        if filter is not None and self.band is None:
            raise ValueError("the frequency-aware filter needs the operator's band: pass band=...")
        self.filter = filter
        self.low_band_weight = low_band_weight
        self.high_band_weight = high_band_weight

    # -- hints

    def known_mask(self) -> torch.Tensor | None:
        """Pixel mask (N or 1, 1, H, W), 1 = observed; None when not a masking measurement."""
        return None if self._known is None else self._known.clone()

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        if self._pinv is None:
            raise ValueError("this measurement model has no pinv hint: clamping and guided+dc need "
                             "MeasurementModel(operator, pinv=...)")
        return self._pinv(y)

    @property
    def can_clamp(self) -> bool:
        return self._pinv is not None and (self._known is not None or self.band is not None)

    # -- the map and the likelihood

    def check_y(self, y: torch.Tensor) -> None:
        if self.builtin is not None:
            self.builtin.check_y(y)
        elif not isinstance(y, torch.Tensor) or y.dim() < 1:
            raise ValueError(f"y must be a tensor with a batch dimension, got {type(y).__name__}")

    def __call__(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.operator(x_BCHW)

    def residual(self, x_BCHW: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``A(x) - y``; a clear error when ``A``'s output does not have ``y``'s shape."""
        ax = self.operator(x_BCHW)
        if not isinstance(ax, torch.Tensor):
            raise TypeError(f"the operator returned {type(ax).__name__}, expected a tensor shaped like y "
                            f"{tuple(y.shape)}")
        if ax.shape != y.shape:
            raise ValueError(f"the operator maps images {tuple(x_BCHW.shape)} to {tuple(ax.shape)} but y has shape "
                             f"{tuple(y.shape)}: A(x) and y must have the same shape (batch first)")
        return ax - y

    def residual_norm(self, x_BCHW: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``||A(x) - y||`` per sample (B,), full band."""
        return self.residual(x_BCHW, y).flatten(1).norm(dim=1)

    def noise_norm(self, y: torch.Tensor) -> torch.Tensor:
        """Expected ``||n||`` per sample (B,): ``sigma_y sqrt(m)``, m = measured values (observed ones for masks)."""
        B = y.shape[0]
        if self._known is not None:
            m_B = self._known.to(y).flatten(1).sum(1) * y.shape[1]
            m_B = m_B.expand(B) if m_B.numel() == 1 else m_B
        else:
            m_B = torch.full((B,), float(y[0].numel()), device=y.device)
        return self.sigma_y * m_B.sqrt()

    def neg_log_likelihood(self, x_BCHW: torch.Tensor, y: torch.Tensor, si: int | None = None) -> torch.Tensor:
        """``||F_si(A(x) - y)||^2 / (2 sigma_y^2)`` per sample (B,); ``F`` the band filter (None: full band)."""
        return self.squared_residual(x_BCHW, y, si) / (2 * self.sigma_y ** 2)

    def squared_residual(self, x_BCHW: torch.Tensor, y: torch.Tensor, si: int | None = None) -> torch.Tensor:
        """``||F_si(A(x) - y)||^2`` per sample (B,), bands weighted (see the filter)."""
        r = self.residual(x_BCHW, y)
        if self.filter is None or si is None:
            return r.flatten(1).pow(2).sum(1)
        low, high = self.filter.split(r, si)
        ratio = r[0].numel() / low[0].numel()  # area-averaging shrinks a band's energy by the pixel ratio
        out = self.low_band_weight * ratio * low.flatten(1).pow(2).sum(1)
        if self.high_band_weight:
            out = out + self.high_band_weight * high.flatten(1).pow(2).sum(1)
        return out

    def project(self, x_BCHW: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Range-null-space data consistency ``x + A^+(y - A x)`` (needs an exact pinv), clipped to [-1, 1]."""
        if not self.exact_pinv:
            raise ValueError("guided+dc needs an operator with an exact pseudo-inverse (masks, area super-resolution, "
                             "or MeasurementModel(..., pinv=..., exact_pinv=True))")
        return (x_BCHW - self.pinv(self.residual(x_BCHW, y))).clamp(-1, 1)

    # -- batches

    def select(self, idx: torch.Tensor) -> MeasurementModel:
        """The model for images ``idx`` (per-image masks subset); a callable's hints are kept as given."""
        if self.builtin is None:
            known = self._known
            if known is not None and known.shape[0] > 1:
                known = known[torch.as_tensor(idx, dtype=torch.long).cpu()]
            return MeasurementModel(self.operator, self.sigma_y, band=self.band, known_mask=known, pinv=self._pinv,
                                    exact_pinv=self.exact_pinv, filter=self.filter,
                                    low_band_weight=self.low_band_weight, high_band_weight=self.high_band_weight)
        return MeasurementModel(self.builtin.select(idx), self.sigma_y, filter=self.filter,
                                low_band_weight=self.low_band_weight, high_band_weight=self.high_band_weight)
