"""Sampling settings of the evaluation and their sweeps, and timed generation of sample sets.

A *setting* is one way of sampling a trained model (CFG, its schedule, top-k / top-p,
temperature, token resampling). The evaluation runs a base setting called ``default`` (the
params' ``sampling`` section), named variants of it, and sweeps that need no retraining:

- ``cfg`` sweep: ``cfg=<t>`` (with the resampling of ``sweeps.cfg_resample``, masked by default,
  so the sweep's best point is the "SRDD + masked resampling + tuned CFG" row);
- masked-resampling sweep: ``masked_t<threshold>_n<iters>`` over a grid;
- filters: ``top_k<k>`` and ``top_p<p>``.

One spelling everywhere: these names are the keys of ``metrics/evaluate/<model>.json``, the
MLflow metric prefixes and the grid / folder names.

Each sample set is generated in a fresh process (:func:`generate_isolated`), so its speed and
peak memory are measured from a clean start and do not depend on what ran before.
"""

from __future__ import annotations

import dataclasses
import re
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from scalewise.core.config import ConfigError, check_choice
from scalewise.sampling.generate import CFG_SCHEDULES, RESAMPLE_KINDS, Resample, check_sampling_args

SETTING_KEYS = ("cfg", "cfg_schedule", "top_k", "top_p", "temperature", "resample")


@dataclass(frozen=True)
class SamplingSetting:
    """How to sample: the arguments of :func:`scalewise.sampling.generate.generate`."""

    cfg: float = 1.5
    cfg_schedule: str = "linear"
    top_k: int = 0
    top_p: float = 0.0
    temperature: float = 1.0
    resample_kind: str = "none"
    resample_threshold: float = 0.05
    resample_iters: int = 2
    resample_use_cfg: bool = True

    def __post_init__(self) -> None:
        check_sampling_args(self.cfg, self.top_k, self.top_p, self.temperature)
        check_choice("cfg_schedule", self.cfg_schedule, CFG_SCHEDULES)
        check_choice("resample.kind", self.resample_kind, RESAMPLE_KINDS)
        self.resample()  # validates threshold / iters

    def resample(self) -> Resample:
        return Resample(kind=self.resample_kind, threshold=self.resample_threshold, iters=self.resample_iters,
                        use_cfg=self.resample_use_cfg)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def setting_from(base: SamplingSetting, overrides: dict[str, Any], where: str) -> SamplingSetting:
    """``base`` with ``overrides`` in the params' shape (``resample: {kind, threshold, iters, use_cfg}``)."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected a mapping of sampling options, got {overrides!r}")
    unknown = sorted(set(overrides) - set(SETTING_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown sampling option(s) {unknown}; allowed: {list(SETTING_KEYS)}")
    flat = {k: v for k, v in overrides.items() if k != "resample"}
    resample = overrides.get("resample") or {}
    if not isinstance(resample, dict):
        raise ConfigError(f"{where}.resample: expected a mapping with kind/threshold/iters/use_cfg")
    bad = sorted(set(resample) - {"kind", "threshold", "iters", "use_cfg"})
    if bad:
        raise ConfigError(f"{where}.resample: unknown key(s) {bad}; allowed: kind, threshold, iters, use_cfg")
    flat.update({f"resample_{k}": v for k, v in resample.items()})
    try:
        return dataclasses.replace(base, **flat)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


@dataclass
class SweepConfig:
    """``evaluate.sweeps``: settings that need no retraining, run on ``models`` only."""

    models: list[str] = field(default_factory=lambda: ["srdd"])
    samples_per_class: int = 50
    cfg: list[float] = field(default_factory=list)
    cfg_models: list[str] | None = None  # the models of the CFG sweep (None: ``models``)
    cfg_resample: str = "masked"  # resampling used along the CFG sweep (none | simple | masked)
    masked_threshold: list[float] = field(default_factory=list)
    masked_iters: list[int] = field(default_factory=list)
    top_k: list[int] = field(default_factory=list)
    top_p: list[float] = field(default_factory=list)


CFG_POINT = re.compile(r"^cfg([0-9.]+(?:e[+-]?\d+)?)$")  # a CFG sweep point's name: cfg1.5


def sweep_settings(base: SamplingSetting, sweeps: SweepConfig, model: str | None = None) -> dict[str, SamplingSetting]:
    """The sweep points of ``model`` (None: every sweep), named ``cfg<t>`` (on ``cfg_models``),
    ``masked_t<threshold>_n<iters>``, ``top_k<k>``, ``top_p<p>`` (on ``models``)."""
    out: dict[str, SamplingSetting] = {}
    cfg_models = sweeps.models if sweeps.cfg_models is None else sweeps.cfg_models
    if model is None or model in cfg_models:
        for t in sweeps.cfg:
            out[f"cfg{float(t):g}"] = dataclasses.replace(base, cfg=float(t), resample_kind=sweeps.cfg_resample)
    if model is not None and model not in sweeps.models:
        return out
    for thr in sweeps.masked_threshold:
        for n in sweeps.masked_iters:
            out[f"masked_t{float(thr):g}_n{int(n)}"] = dataclasses.replace(
                base, resample_kind="masked", resample_threshold=float(thr), resample_iters=int(n))
    for k in sweeps.top_k:
        out[f"top_k{int(k)}"] = dataclasses.replace(base, top_k=int(k))
    for p in sweeps.top_p:
        out[f"top_p{float(p):g}"] = dataclasses.replace(base, top_p=float(p))
    return out


def best_cfg(results: dict[str, dict[str, Any]], metric: str = "fid") -> float | None:
    """The CFG of the ``cfg<t>`` sweep point with the lowest ``metric``; None without a CFG sweep."""
    points = [(r[metric], float(m.group(1))) for name, r in results.items()
              if (m := CFG_POINT.match(name)) and metric in r]
    return min(points)[1] if points else None


# ----------------------------------------------------------------------------- generation


@dataclass
class SampleSet:
    """Samples of one (model, setting): uint8 images (N, C, H, W), labels (N,), and how fast."""

    images_u8: torch.Tensor
    labels: torch.Tensor
    images_per_s: float
    peak_memory_bytes: int
    cache_bytes: int
    steps: int  # transformer forwards per image (scales, plus refinement passes)


def generate_set(model_path: str, tokenizer_path: str, setting: SamplingSetting, samples_per_class: int,
                 batch_size: int, seed: int, device: str = "cpu", threads: int = 0, infer_mode: str = "baseline",
                 heads_path: str | None = None) -> SampleSet:
    """``samples_per_class`` images of every class, in batches, batch ``i`` seeded ``seed + i``.

    ``images_per_s`` counts generation and decoding (not model loading); ``peak_memory_bytes``
    is this process's peak resident set size (run it in a fresh process to measure one set).
    ``infer_mode`` other than ``baseline`` samples with the learned heads of ``heads_path``.
    """
    from scalewise.core.allocator import keep_freed_memory
    from scalewise.models.checkpoints import load_heads, load_tokenizer, load_transformer
    from scalewise.models.student import tokenizer_for
    from scalewise.core.images import to_uint8
    from scalewise.sampling.generate import generate

    keep_freed_memory()
    if threads:
        torch.set_num_threads(threads)
    model = load_transformer(model_path, device)
    heads = None
    if heads_path is not None:
        heads, model = load_heads(heads_path, model, device)
    tokenizer = tokenizer_for(model, load_tokenizer(tokenizer_path, device))
    labels_N = torch.arange(model.num_classes).repeat_interleave(samples_per_class)
    images, cache, refine = [], 0, 0
    # warm-up with a full batch: first-touch page faults of the batch's buffers are not timed
    generate(model, tokenizer, labels_N[:batch_size], cfg=setting.cfg, seed=seed)
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, labels_N.numel(), batch_size)):
        g = generate(model, tokenizer, labels_N[start:start + batch_size], cfg=setting.cfg,
                     cfg_schedule=setting.cfg_schedule, top_k=setting.top_k, top_p=setting.top_p,
                     temperature=setting.temperature, seed=seed + i, resample=setting.resample(),
                     infer_mode=infer_mode, heads=heads)
        images.append(to_uint8(g.images).cpu())
        cache = max(cache, g.cache_bytes)
        refine = max(refine, sum(g.resample_iters) if setting.resample_kind == "masked" else 0)
    seconds = time.perf_counter() - t0
    return SampleSet(
        images_u8=torch.cat(images), labels=labels_N, images_per_s=labels_N.numel() / seconds,
        peak_memory_bytes=peak_rss_bytes(), cache_bytes=int(cache),
        steps=len(model.cfg.patch_nums) + int(refine),
    )


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def generate_isolated(*args: Any, **kwargs: Any) -> SampleSet:
    """:func:`generate_set` in a fresh (spawned) process: clean timing and peak memory."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(generate_set, *args, **kwargs).result()
