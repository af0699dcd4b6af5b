"""What guided restoration costs against unguided sampling, per guidance variant (T4c's cost columns).

For one task's measurements, each named variant of the base guidance settings
(``reconstruct.guidance``, e.g. ``default`` and ``fast``) restores the first batch with
``methods``, timed side by side: every repetition runs each method once
(:func:`scalewise.bench.restore.time_calls`), and each time is the median of ``runs``
repetitions after ``warmup`` untimed ones. The reference ``prior`` is plain sampling with the
base settings (a variant's own resampling or particles never slow it), timed inside each
variant's repetitions, so every ratio is measured in one run on one machine, whatever its load
did meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from scalewise.bench.restore import method_calls, time_calls
from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import ScaleTransformer
from scalewise.posterior.guidance_config import guidance_config
from scalewise.posterior.measurements import Operator
from scalewise.posterior.restoration import make_sampler, method_flags


@dataclass
class RestoreCostConfig:
    """``params.yaml: restore_cost``."""

    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "default": {}, "fast": {"preset": "fast"}, "masked_resampling": {"resample_iters": 2}})
    methods: list[str] = field(default_factory=lambda: ["prior", "clamp", "guided"])
    runs: int = 3  # timed repetitions per method (the median is kept)
    warmup: int = 1  # untimed repetitions first
    batch_size: int = 32  # the images timed: the first batch of each task (the reconstruct stage's batch size)
    seed: int = 0
    device: str = "cpu"
    threads: int = 0

    def __post_init__(self) -> None:
        if "prior" not in self.methods:
            raise ValueError(f"methods must include prior (the reference of every ratio), got {self.methods}")
        for m in self.methods:
            method_flags(m)
        if not self.variants:
            raise ValueError("variants must name at least one change to reconstruct.guidance (e.g. default: {})")
        if self.runs < 1 or self.warmup < 0 or self.batch_size < 1:
            raise ValueError(f"runs and batch_size must be >= 1 and warmup >= 0, got {self.runs}, "
                             f"{self.batch_size} and {self.warmup}")


def restore_cost(model: ScaleTransformer, tokenizer: Tokenizer, operator: Operator, y: torch.Tensor,
                 base: dict[str, Any], config: RestoreCostConfig, sigma_y: float,
                 where: str = "reconstruct.guidance") -> dict[str, dict[str, Any]]:
    """``{variant: {sec_per_image: {method: s}, ratio_to_prior: {method: x}, batch_size, runs, ...}}``
    (``prior``: plain sampling with ``base``, the same in every variant).

    ``y`` (N, ...) holds ``operator``'s measurements; the first ``config.batch_size`` are timed.
    Each variant's settings are ``{**base, **changes}`` for ``operator``'s kind (as
    :func:`scalewise.evaluation.frontier.frontier` builds them).
    """
    n = min(config.batch_size, y.shape[0])
    idx = torch.arange(n)
    op, y_b = operator.select(idx), y[:n]
    dev = next(model.parameters()).device
    reference = method_calls(make_sampler(model, tokenizer, op, guidance_config(base, where, operator.kind, operator.settings), sigma_y),
                             y_b, ["prior"])
    out: dict[str, dict[str, Any]] = {}
    for name, changes in config.variants.items():
        cfg = guidance_config({**base, **changes}, f"{where} + {name}", operator.kind, operator.settings)
        calls = {**reference, **method_calls(make_sampler(model, tokenizer, op, cfg, sigma_y), y_b,
                                             [m for m in config.methods if m != "prior"])}
        sec = {m: s / n for m, s in time_calls(calls, dev, config.runs, config.warmup, config.seed).items()}
        out[name] = {"sec_per_image": sec, "ratio_to_prior": {m: s / sec["prior"] for m, s in sec.items()},
                     "batch_size": n, "runs": config.runs, "preset": cfg.preset, "grad_steps": cfg.grad_steps,
                     "particles": cfg.particles}
    return out
