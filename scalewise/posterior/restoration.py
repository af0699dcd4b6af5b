"""Restore a set of measurements with one method and score the results.

Methods: ``prior`` (unguided samples: what the model draws without looking at ``y``),
``clamp`` (zero-shot token clamping), ``guided`` (gradient-guided posterior sampling) and
``clamp+guided``. Scores per image: PSNR and SSIM against the clean image (dB / unitless,
images in [-1, 1]) and measurement consistency ``||A(x_hat) - y||`` (L2 over all of y's
values, [-1, 1] scale).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from scalewise.core.metrics import psnr, ssim
from scalewise.posterior.filters import FrequencyAwareFilter
from scalewise.posterior.guidance import METHODS, GradientGuidedSampler, MeasurementModel, PosteriorGuidanceConfig
from scalewise.posterior.measurements import Operator
from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import ScaleTransformer

CONDITIONINGS = ("unconditional", "class")


@dataclass
class ReconstructConfig:
    """``params.yaml: reconstruct``: how the ``reconstruct@<model>-<task>`` stages restore."""

    methods: list[str] = field(default_factory=lambda: list(METHODS))
    batch_size: int = 32
    conditioning: str = "unconditional"  # unconditional (null class) | class (the test labels)
    seed: int = 0
    device: str = "cpu"
    grid_rows: int = 8  # examples in the side-by-side grid
    threads: int = 0
    guidance: dict[str, Any] = field(default_factory=dict)  # PosteriorGuidanceConfig fields

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise ValueError(f"methods: unknown {unknown} (allowed: {list(METHODS)})")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning={self.conditioning!r}; allowed: {list(CONDITIONINGS)}")


def method_flags(method: str) -> tuple[bool, bool]:
    """``(guided, clamp)`` of a method name."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {list(METHODS)}")
    return method in ("guided", "clamp+guided"), method in ("clamp", "clamp+guided")


def make_sampler(model: ScaleTransformer, tokenizer: Tokenizer, operator: Operator,
                 config: PosteriorGuidanceConfig) -> GradientGuidedSampler:
    """A sampler for ``operator`` with the frequency-aware filter the config asks for."""
    filt = FrequencyAwareFilter(tuple(tokenizer.patch_nums), operator.band, enabled=config.filter)
    measurement = MeasurementModel(operator, filt, config.low_band_weight, config.high_band_weight)
    return GradientGuidedSampler(model, tokenizer, measurement, config)


@dataclass
class Restoration:
    images: torch.Tensor  # (N, C, H, W) in [-1, 1]
    seconds: float  # wall time of the whole set
    method: str

    @property
    def sec_per_image(self) -> float:
        return self.seconds / max(1, self.images.shape[0])


def restore(model: ScaleTransformer, tokenizer: Tokenizer, operator: Operator, y: torch.Tensor, method: str,
            config: PosteriorGuidanceConfig, labels: torch.Tensor | None = None, batch_size: int = 16,
            seed: int = 0, progress: bool = False) -> Restoration:
    """Restore every measurement in ``y`` (N, ...) with ``method``, in batches (deterministic per seed)."""
    guided, clamp = method_flags(method)
    N = y.shape[0]
    out = []
    t0 = time.perf_counter()
    starts = range(0, N, batch_size)
    for b, start in enumerate(tqdm(starts, desc=method, disable=not progress, leave=False)):
        idx = torch.arange(start, min(N, start + batch_size))
        sampler = make_sampler(model, tokenizer, operator.select(idx), config)
        lab = None if labels is None else labels[idx]
        res = sampler.sample(y[idx], lab, guided=guided, clamp=clamp, seed=seed + b)
        out.append(res.images)
    return Restoration(torch.cat(out), time.perf_counter() - t0, method)


@torch.no_grad()
def score(clean: torch.Tensor, restored: torch.Tensor, operator: Operator, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image ``psnr`` (dB), ``ssim`` and ``consistency`` ``||A(x_hat) - y||``, each (N,)."""
    return {
        "psnr": psnr(restored, clean),
        "ssim": ssim(restored, clean),
        "consistency": (operator(restored) - y).flatten(1).norm(dim=1),
    }


def observation_image(operator: Operator, y: torch.Tensor) -> torch.Tensor:
    """``y`` shown at image size (N, C, H, W) in [-1, 1]: unobserved pixels black, low-res y upsampled."""
    size = operator.image_size
    if y.dim() == 4 and y.shape[-1] != size:
        return F.interpolate(y, size=(size, size), mode="nearest").clamp(-1, 1)
    mask = operator.known_mask()
    if mask is not None:
        return torch.where(mask.bool().expand_as(y), y, torch.full_like(y, -1.0)).clamp(-1, 1)
    return y.clamp(-1, 1)


def side_by_side(clean: torch.Tensor, observation: torch.Tensor, restored: list[torch.Tensor], rows: int = 8) -> torch.Tensor:
    """Images for a grid with one row per example: clean | observation | each method, (rows*(2+M), C, H, W)."""
    n = min(rows, clean.shape[0])
    cols = [clean[:n], observation[:n]] + [r[:n] for r in restored]
    return torch.stack(cols, dim=1).flatten(0, 1)
