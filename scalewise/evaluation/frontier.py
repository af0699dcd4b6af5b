"""The PSNR-vs-seconds frontier of guided posterior sampling (table T4b).

Each point is the ``guided`` restoration of one task's measurements with the base guidance
settings (``reconstruct.guidance``) changed to ``particles`` N and ``grad_steps`` S per guided
scale, or by a named variant (which may name another preset, e.g. ``{preset: fast}``). Its time
is measured side by side with unguided sampling (``prior``) on the same images and batch size,
each run after one untimed warm-up batch. The ``clamp`` baseline is a reference point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import ScaleTransformer
from scalewise.evaluation.paired import paired_se
from scalewise.posterior.guidance_config import guidance_config
from scalewise.posterior.measurements import Operator
from scalewise.posterior.restoration import restore_methods, score


@dataclass
class FrontierConfig:
    """``params.yaml: posterior_frontier``."""

    num_images: int = 32  # the first images of each task's reported subset
    particles: list[int] = field(default_factory=lambda: [1, 2, 4])
    grad_steps: list[int] = field(default_factory=lambda: [1, 4, 10])
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> guidance changes, at the base N and S
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"
    threads: int = 0

    def __post_init__(self) -> None:
        if self.num_images < 1 or self.batch_size < 1:
            raise ValueError("num_images and batch_size must be >= 1")
        if not self.particles or min(self.particles) < 1 or not self.grad_steps or min(self.grad_steps) < 1:
            raise ValueError(f"particles and grad_steps must be non-empty lists of integers >= 1, "
                             f"got {self.particles} and {self.grad_steps}")


def point_name(particles: int, grad_steps: int) -> str:
    """The record name of one frontier point, e.g. ``n2_s4``."""
    return f"n{particles}_s{grad_steps}"


def frontier(model: ScaleTransformer, tokenizer: Tokenizer, operator: Operator, y: torch.Tensor, clean: torch.Tensor,
             base: dict[str, Any], config: FrontierConfig, sigma_y: float,
             where: str = "reconstruct.guidance") -> dict[str, dict[str, float]]:
    """``{point: {particles, steps, resample_iters, psnr, psnr_mean, ssim, consistency, sec_per_image,
    ratio_to_prior, psnr_se_vs_clamp}}`` for the particles x grad_steps grid, each named variant of
    ``config`` and the ``clamp`` baseline (whose ``psnr_mean`` is its ``psnr``); ``psnr_se_vs_clamp``
    is the paired standard error of the point's PSNR minus ``clamp``'s (dB).

    ``base`` holds the guidance values (a preset and overrides) the points change; each point is
    built with :func:`guidance_config` for ``operator``'s kind. ``psnr`` is the best-consistency
    particle (``guided``), ``psnr_mean`` the particle mean (``guided_mean``); ``clean`` (N, C, H, W)
    and ``y`` (N, ...) hold the same images.
    """
    points = [(point_name(n, st), {"particles": n, "grad_steps": st}) for n in config.particles for st in config.grad_steps]
    points += [(name, dict(changes)) for name, changes in config.variants.items()]
    base_cfg = guidance_config(base, where, operator.kind, operator.settings)

    def run(methods: list[str], cfg) -> dict:
        return restore_methods(model, tokenizer, operator, y, methods, cfg, None, config.batch_size, config.seed,
                               sigma_y, warmup=True)

    prior = run(["prior"], base_cfg)["prior"]
    out: dict[str, dict[str, float]] = {}
    per_image: dict[str, torch.Tensor] = {}  # point -> (N,) PSNR of its guided restoration
    for name, changes in points + [("clamp", None)]:
        cfg = base_cfg if changes is None else guidance_config({**base, **changes}, f"{where} + {name}", operator.kind,
                                                                  operator.settings)
        if changes is None:
            res = run(["clamp"], cfg)
            res["guided"] = res["guided_mean"] = res["clamp"]
        else:
            res = run(["guided", "guided_mean"], cfg)
        s = score(clean, res["guided"].images, operator, y)
        s_mean = score(clean, res["guided_mean"].images, operator, y)
        out[name] = {
            "particles": cfg.particles, "steps": 0 if changes is None else cfg.grad_steps,
            "resample_iters": cfg.resample_iters,
            "psnr": float(s["psnr"].mean()), "psnr_mean": float(s_mean["psnr"].mean()),
            "ssim": float(s["ssim"].mean()), "consistency": float(s["consistency"].mean()),
            "sec_per_image": res["guided"].sec_per_image,
            "ratio_to_prior": res["guided"].sec_per_image / max(prior.sec_per_image, 1e-12),
        }
        per_image[name] = s["psnr"]
    for name in out:  # the paired standard error of each point's margin over clamp (same images)
        out[name]["psnr_se_vs_clamp"] = paired_se(per_image[name], per_image["clamp"])
    return out
