"""Speed / memory benchmark of restoration: every method on one task, side by side in one run.

The record holds seconds per image for each method (medians of ``runs`` after ``warmup``),
their ratio to the unguided ``prior`` at the same batch size, and the peak memory (RSS on
CPU, max allocated on CUDA). Models are random (from a :class:`BenchModel`) or checkpoints.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from scalewise.bench.sample import BenchModel, _sync, measured_peak
from scalewise.posterior.guidance import METHODS, GradientGuidedSampler
from scalewise.posterior.guidance_config import PosteriorGuidanceConfig
from scalewise.posterior.tasks import standard_task, task_operator
from scalewise.posterior.restoration import method_flags, make_sampler
from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import ScaleTransformer

def random_models(spec: BenchModel, mask_kind: str, device: str, seed: int = 0) -> tuple[ScaleTransformer, Tokenizer]:
    """A random transformer + tokenizer of ``spec`` in eval mode on ``device``."""
    torch.manual_seed(seed)
    tok = Tokenizer(spec.tokenizer_config()).to(device).eval().channels_last_()
    model = ScaleTransformer(spec.transformer_config(mask_kind)).to(device).eval()
    return model, tok


def time_calls(calls: dict[str, Callable[[int], object]], device: torch.device, runs: int = 3, warmup: int = 1,
               seed: int = 0) -> dict[str, float]:
    """Seconds per call of each ``calls[name](seed)``: the median of ``runs`` timed repetitions
    after ``warmup`` untimed ones (repetition i passes ``seed + i``).

    The calls are interleaved (every repetition runs each one once, in order), so a change in
    the machine's load during the measurement hits all of them alike and their ratios stay side
    by side.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got {runs} and {warmup}")
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(warmup + runs):
        for name, call in calls.items():
            _sync(device)
            t0 = time.perf_counter()
            call(seed + i)
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def method_calls(sampler: GradientGuidedSampler, y: torch.Tensor,
                 methods: tuple[str, ...] | list[str]) -> dict[str, Callable[[int], object]]:
    """``{method: seed -> sampler.sample(y, ...)}`` for :func:`time_calls` (methods of ``METHODS``)."""
    def call(guided: bool, clamp: bool) -> Callable[[int], object]:
        return lambda seed: sampler.sample(y, guided=guided, clamp=clamp, seed=seed)
    return {m: call(*method_flags(m)) for m in methods}


def time_methods(sampler: GradientGuidedSampler, y: torch.Tensor, methods: tuple[str, ...] | list[str],
                 runs: int = 3, warmup: int = 1, seed: int = 0) -> dict[str, float]:
    """Seconds per image of each method on the batch ``y`` (B, ...), interleaved (:func:`time_calls`)."""
    sec = time_calls(method_calls(sampler, y, methods), next(sampler.model.parameters()).device, runs, warmup, seed)
    return {m: s / y.shape[0] for m, s in sec.items()}


def bench_restore(model: ScaleTransformer, tokenizer: Tokenizer, task: str, batch: int,
                  config: PosteriorGuidanceConfig, methods: tuple[str, ...] = METHODS, runs: int = 5,
                  warmup: int = 1, seed: int = 0) -> dict:
    """One record: ``{task, mask, batch_size, sec_per_image: {method: s}, ratio_to_prior: {method: x}, ...}``."""
    spec = standard_task(task)
    for m in methods:
        method_flags(m)
    dev = next(model.parameters()).device
    size = tokenizer.cfg.downsample * tokenizer.patch_nums[-1]
    channels = tokenizer.cfg.in_channels
    op = task_operator(task, spec, size, channels, num_images=batch, seed=seed)
    x = torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    y = op(x).to(dev)
    sampler = make_sampler(model, tokenizer, op.to(dev), config)
    sec = time_methods(sampler, y, methods, runs, warmup, seed)
    peaks: dict[str, int] = {}
    for method in methods:
        guided, clamp = method_flags(method)
        peaks[method] = measured_peak(lambda: sampler.sample(y, guided=guided, clamp=clamp, seed=seed), dev)
    base = sec.get("prior")
    return {
        "task": task, "operator": spec["kind"], "mask_kind": model.cfg.mask_kind, "batch_size": batch, "device": str(dev),
        "threads": torch.get_num_threads(), "runs": runs, "image_size": size, "tokens": model.cfg.num_tokens,
        "preset": config.preset, "grad_steps": config.grad_steps, "guide_from_scale": config.guide_from_scale,
        "estimate": config.estimate, "particles": config.particles, "relax": config.relax,
        "sec_per_image": sec, "ms_per_image": {m: s * 1e3 for m, s in sec.items()},
        "ratio_to_prior": {m: s / base for m, s in sec.items()} if base else {},
        "peak_memory_bytes": peaks,
    }
