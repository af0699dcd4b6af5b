"""Restore a set of measurements with each method and score the results.

Methods (:data:`ALL_METHODS`):

- ``prior``: unguided samples, what the model draws without looking at ``y``;
- ``classical``: bicubic / deconvolution / biharmonic inpainting (:mod:`.classical`);
- ``clamp``: zero-shot token clamping;
- ``guided``: gradient-guided posterior sampling, the best-consistency particle (the default
  of ``scalewise restore``);
- ``guided_mean``: the weighted particle mean of the same run (an MMSE estimate);
- ``guided+dc``: ``guided`` followed by the range-null-space projection onto ``A x = y``
  (operators with an exact pseudo-inverse only);
- ``clamp+guided``: clamping at every scale and guidance together (``guided`` itself clamps
  only the scales it does not guide, by default: ``clamp``, ``clamp_scales``);
- ``oracle``: the tokenizer's own reconstruction of the clean image, the ceiling of any token
  sampler (needs the clean images: :func:`oracle_restore`).

Scores per image: PSNR and SSIM against the clean image (dB / unitless, images in [-1, 1]) and
measurement consistency ``||A(x_hat) - y||`` (L2 over all of y's values, [-1, 1] scale).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from scalewise.core.metrics import psnr, ssim
from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import ScaleTransformer
from scalewise.posterior.classical import classical_restore
from scalewise.posterior.filters import FrequencyAwareFilter
from scalewise.posterior.guidance import METHODS, GradientGuidedSampler
from scalewise.posterior.guidance_config import PosteriorGuidanceConfig
from scalewise.posterior.measurement_model import MeasurementModel
from scalewise.posterior.measurements import Operator

CONDITIONINGS = ("unconditional", "class")
DERIVED = {"guided_mean": "guided", "guided+dc": "guided"}  # method -> the sampling run it comes from
ALL_METHODS = ("prior", "classical", "clamp", "guided", "guided_mean", "guided+dc", "clamp+guided", "oracle")


@dataclass
class ReconstructConfig:
    """``params.yaml: reconstruct``: how the ``reconstruct@<model>-<task>`` stages restore."""

    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    batch_size: int = 32
    conditioning: str = "unconditional"  # unconditional (null class) | class (the test labels)
    seed: int = 0
    device: str = "cpu"
    grid_rows: int = 8  # examples in the side-by-side grid
    threads: int = 0
    guidance: dict[str, Any] = field(default_factory=dict)  # PosteriorGuidanceConfig fields over its preset

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(ALL_METHODS))
        if unknown or not self.methods:
            raise ValueError(f"methods: unknown {unknown} (allowed: {list(ALL_METHODS)})")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning={self.conditioning!r}; allowed: {list(CONDITIONINGS)}")


def method_flags(method: str) -> tuple[bool, bool]:
    """``(guided, clamp)`` of a sampling method (one of ``METHODS``)."""
    if method not in METHODS:
        raise ValueError(f"unknown sampling method {method!r}; allowed: {list(METHODS)}")
    return method in ("guided", "clamp+guided"), method in ("clamp", "clamp+guided")


def measurement_model(tokenizer: Tokenizer, operator: Operator | MeasurementModel, config: PosteriorGuidanceConfig,
                      sigma_y: float = 0.05) -> MeasurementModel:
    """``operator`` as the sampler's measurement model, with the filter the config asks for."""
    if isinstance(operator, MeasurementModel):
        return operator
    filt = FrequencyAwareFilter(tuple(tokenizer.patch_nums), operator.band) if config.filter else None
    return MeasurementModel(operator, sigma_y, filter=filt, low_band_weight=config.low_band_weight,
                            high_band_weight=config.high_band_weight)


def make_sampler(model: ScaleTransformer, tokenizer: Tokenizer, operator: Operator | MeasurementModel,
                 config: PosteriorGuidanceConfig, sigma_y: float = 0.05) -> GradientGuidedSampler:
    """A sampler for ``operator`` (an :class:`Operator` with noise ``sigma_y``, or a :class:`MeasurementModel`)."""
    return GradientGuidedSampler(model, tokenizer, measurement_model(tokenizer, operator, config, sigma_y), config)


def applicable_methods(methods: list[str], operator: Operator | MeasurementModel) -> tuple[list[str], list[str]]:
    """``(kept, skipped)``: ``guided+dc`` needs an exact pseudo-inverse (masks, area super-resolution)."""
    meas = operator if isinstance(operator, MeasurementModel) else MeasurementModel(operator)
    skipped = [m for m in methods if m == "guided+dc" and not meas.exact_pinv]
    return [m for m in methods if m not in skipped], skipped


@dataclass
class Restoration:
    images: torch.Tensor  # (N, C, H, W) in [-1, 1]
    seconds: float  # wall time of the whole set
    method: str

    @property
    def sec_per_image(self) -> float:
        return self.seconds / max(1, self.images.shape[0])


def restore_methods(model: ScaleTransformer, tokenizer: Tokenizer, operator: Operator | MeasurementModel,
                    y: torch.Tensor, methods: list[str] | tuple[str, ...], config: PosteriorGuidanceConfig,
                    labels: torch.Tensor | None = None, batch_size: int = 16, seed: int = 0, sigma_y: float = 0.05,
                    progress: bool = False, warmup: bool = False) -> dict[str, Restoration]:
    """Restore every measurement in ``y`` (N, ...) with each of ``methods`` (all but ``oracle``).

    Sampling is batched and deterministic per seed; ``guided_mean`` and ``guided+dc`` come from
    the ``guided`` run (their time is that run's). With ``warmup``, each sampling method first
    restores the first batch once, untimed and discarded (first-call allocations and kernel
    selection stay out of ``sec_per_image``; the results are unchanged). Returns
    ``{method: Restoration}``.
    """
    unknown = sorted(set(methods) - set(ALL_METHODS) | ({"oracle"} & set(methods)))
    if unknown:
        raise ValueError(f"restore_methods: cannot run {unknown} (oracle needs the clean images: oracle_restore; "
                         f"allowed: {[m for m in ALL_METHODS if m != 'oracle']})")
    meas = measurement_model(tokenizer, operator, config, sigma_y)
    runs = list(dict.fromkeys(DERIVED.get(m, m) for m in methods))
    out: dict[str, Restoration] = {}
    for run in runs:
        if run == "classical":
            if meas.builtin is None:
                raise ValueError("classical restoration needs a built-in Operator (not a custom callable)")
            t0 = time.perf_counter()
            images = classical_restore(meas.builtin, y.cpu(), meas.sigma_y)
            out[run] = Restoration(images, time.perf_counter() - t0, run)
            continue
        guided, clamp = method_flags(run)
        N = y.shape[0]
        best, mean, proj = [], [], []
        if warmup:
            idx = torch.arange(min(N, batch_size))
            GradientGuidedSampler(model, tokenizer, meas.select(idx), config).sample(
                y[idx], None if labels is None else labels[idx], guided=guided, clamp=clamp, seed=seed)
        starts = range(0, N, batch_size)
        bar = tqdm(total=len(starts) * len(model.cfg.patch_nums), desc=run, unit="scale", disable=not progress,
                   leave=False)  # per scale: a batch of a large model takes minutes
        t0 = time.perf_counter()
        for b, start in enumerate(starts):
            idx = torch.arange(start, min(N, start + batch_size))
            sampler = GradientGuidedSampler(model, tokenizer, meas.select(idx), config)
            res = sampler.sample(y[idx], None if labels is None else labels[idx], guided=guided, clamp=clamp,
                                 seed=seed + b, on_scale_done=lambda si: bar.update())
            best.append(res.images)
            mean.append(res.mean_images)
            if run == "guided" and "guided+dc" in methods:
                proj.append(sampler.measurement.project(res.images, y[idx]))
        seconds = time.perf_counter() - t0
        bar.close()
        out[run] = Restoration(torch.cat(best), seconds, run)
        if run == "guided":
            if "guided_mean" in methods:
                out["guided_mean"] = Restoration(torch.cat(mean), seconds, "guided_mean")
            if "guided+dc" in methods:
                out["guided+dc"] = Restoration(torch.cat(proj), seconds, "guided+dc")
    return {m: out[m] for m in methods}


def restore(model: ScaleTransformer, tokenizer: Tokenizer, operator: Operator | MeasurementModel, y: torch.Tensor,
            method: str, config: PosteriorGuidanceConfig, labels: torch.Tensor | None = None, batch_size: int = 16,
            seed: int = 0, sigma_y: float = 0.05, progress: bool = False) -> Restoration:
    """Restore every measurement in ``y`` (N, ...) with one ``method`` (see :func:`restore_methods`)."""
    return restore_methods(model, tokenizer, operator, y, [method], config, labels, batch_size, seed, sigma_y,
                           progress)[method]


@torch.no_grad()
def oracle_restore(tokenizer: Tokenizer, clean: torch.Tensor, batch_size: int = 64) -> Restoration:
    """The tokenizer's reconstruction ``D(Q(E(x)))`` of the clean images (N, C, H, W) in [-1, 1]."""
    dev = next(tokenizer.parameters()).device
    t0 = time.perf_counter()
    out = [tokenizer.decode(tokenizer.encode(clean[i:i + batch_size].to(dev))).cpu()
           for i in range(0, clean.shape[0], batch_size)]
    return Restoration(torch.cat(out), time.perf_counter() - t0, "oracle")


@torch.no_grad()
def score(clean: torch.Tensor, restored: torch.Tensor, operator: Operator | MeasurementModel,
          y: torch.Tensor) -> dict[str, torch.Tensor]:
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
