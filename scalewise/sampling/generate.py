"""Class-conditional generation with a trained transformer + tokenizer: :func:`generate`, the
argument checks around the shared scale loop (:func:`scalewise.sampling.loop.run_scales`) and
its per-scale timing.

The names other modules import from here (``CFG_SCHEDULES``, ``RESAMPLE_KINDS``, ``Resample``,
``cfg_scale``, ``combine_cfg``, ``filter_logits``, ``check_sampling_args``, ``draw``,
``simple_resample``, ``Generation``) live in :mod:`.logits`, :mod:`.resample` and :mod:`.loop`.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from scalewise.models.heads import SamplingHeads
from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import ScaleTransformer
from scalewise.sampling.adaptive import ResamplePolicy
from scalewise.sampling.logits import CFG_SCHEDULES, cfg_scale, check_sampling_args, combine_cfg, draw, filter_logits
from scalewise.sampling.loop import Generation, ScaleHooks, ScaleSettings, run_scales
from scalewise.sampling.resample import RESAMPLE_KINDS, Resample, simple_resample

__all__ = [
    "CFG_SCHEDULES", "RESAMPLE_KINDS", "Generation", "Resample", "cfg_scale", "check_sampling_args", "combine_cfg",
    "draw", "filter_logits", "generate", "simple_resample",
]


@torch.no_grad()
def generate(
    model: ScaleTransformer,
    tokenizer: Tokenizer,
    labels: torch.Tensor | list[int],
    cfg: float = 1.5,
    cfg_schedule: str = "linear",
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    seed: int = 0,
    resample: Resample | None = None,
    return_logits: bool = False,
    timing: dict | None = None,
    infer_mode: str = "baseline",
    heads: SamplingHeads | None = None,
    policy: ResamplePolicy | None = None,
    on_scale_done: Callable[[int], None] | None = None,
) -> Generation:
    """Sample images of the given classes, scale by scale.

    Args:
        labels: class indices (B,) in [0, num_classes).
        cfg: guidance strength (0 = off: no unconditional half is run).
        cfg_schedule: ``linear`` (t = cfg * k/(K-1), VAR) or ``constant``.
        top_k, top_p, temperature: sampling filters (0 = off for top_k/top_p).
        seed: the whole draw is deterministic for a seed on a given device.
        resample: optional :class:`Resample`.
        timing: if a dict is given, it receives ``scale_s`` (seconds per scale, transformer
            + sampling + next input) and ``decode_s`` (final decoding).
        infer_mode: ``baseline`` | ``policy`` | ``guidance`` | ``both``: what the learned
            ``heads`` decide (:mod:`scalewise.sampling.adaptive`); ``policy`` replaces the heads'
            re-masking rule (e.g. a :class:`~scalewise.sampling.adaptive.ThresholdPolicy`).
        on_scale_done: called with each scale's index once it is sampled (per-scale progress).
    Returns: a :class:`Generation` (images in [-1, 1], (B, C, H, W)).
    """
    settings = ScaleSettings(cfg, cfg_schedule, top_k, top_p, temperature, resample or Resample(), infer_mode)
    device = next(model.parameters()).device
    labels_B = torch.as_tensor(labels, dtype=torch.long, device=device).flatten()
    if labels_B.numel() and (int(labels_B.min()) < 0 or int(labels_B.max()) >= model.num_classes):
        raise ValueError(f"class labels must lie in [0, {model.num_classes - 1}], got {labels_B.tolist()}")
    gen = torch.Generator(device=device).manual_seed(seed)
    clock = _Clock(device) if timing is not None else None
    out = run_scales(model, tokenizer, labels_B, settings, gen, clock, return_logits, heads, policy, on_scale_done)
    if clock is not None:
        clock.lap()
        timing["scale_s"], timing["decode_s"] = clock.laps[:-1], clock.laps[-1]
    return out


class _Clock(ScaleHooks):
    """Lap timer of the scales (from the first scale's start) and the decoding; synchronises CUDA."""

    def __init__(self, device: torch.device):
        self.device = device
        self.laps: list[float] = []
        self._last = self._now()

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self) -> None:
        now = self._now()
        self.laps.append(now - self._last)
        self._last = now

    def on_start(self) -> None:
        self._last = self._now()

    def on_scale_end(self, si: int, f_hat_BChw: torch.Tensor | None = None) -> None:
        self.lap()
