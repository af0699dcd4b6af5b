"""From a scale's logits to its tokens: the CFG weight and mix, top-k / top-p filters,
temperature, argument checks, and the seeded draw."""

from __future__ import annotations

import torch

CFG_SCHEDULES = ("linear", "constant")


def cfg_scale(cfg: float, si: int, num_scales: int, schedule: str = "linear") -> float:
    """Guidance weight t of scale ``si``: ``cfg * si/(K-1)`` (linear, VAR) or ``cfg`` (constant)."""
    if schedule == "constant":
        return float(cfg)
    if schedule == "linear":
        return float(cfg) * (si / (num_scales - 1) if num_scales > 1 else 1.0)
    raise ValueError(f"unknown cfg_schedule {schedule!r}; allowed: {list(CFG_SCHEDULES)}")


def combine_cfg(x_2Bl_: torch.Tensor, t: float) -> torch.Tensor:
    """``(1 + t) * cond - t * uncond`` from stacked [cond; uncond] rows (2B, l, ...) -> (B, l, ...).

    Applied to logits, or (equivalently, the head being linear) to the head's input.
    """
    cond, uncond = x_2Bl_.chunk(2)
    return cond * (1 + t) - uncond * t


def filter_logits(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Keep the ``top_k`` largest logits and the smallest set with cumulative prob >= ``top_p``.

    ``top_k=0`` and ``top_p=0`` (or 1) switch the filters off. The top token is always kept.
    """
    out = logits_BlV
    V = out.shape[-1]
    if 0 < top_k < V:
        kth = out.topk(top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = out.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p  # mass before this token already >= p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def sampling_probs(logits_BlV: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 0.0) -> torch.Tensor:
    """The distribution tokens are drawn from (B, l, V): temperature, then the filters, then softmax."""
    return filter_logits(logits_BlV / temperature, top_k, top_p).softmax(-1)


def check_sampling_args(cfg: float, top_k: int, top_p: float, temperature: float) -> None:
    """Raise ValueError naming the argument and its allowed range."""
    if cfg < 0:
        raise ValueError(f"cfg must be >= 0, got {cfg}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not (top_p == 0.0 or 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must lie in (0, 1] (or 0 = off), got {top_p}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def draw(probs_BlV: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per position from ``probs`` (B, l, V) -> int64 (B, l).

    Inverse-CDF sampling: one uniform number per position and a binary search in the
    cumulative distribution (``torch.multinomial`` draws V exponentials per position).
    Raises ValueError when a distribution holds NaN or infinity (:func:`check_finite_probs`).
    """
    B, l, V = probs_BlV.shape
    cdf = probs_BlV.float().cumsum(-1)  # (B, l, V)
    check_finite_probs(cdf[..., -1])
    u = torch.rand(B, l, 1, generator=generator, device=probs_BlV.device) * cdf[..., -1:]
    idx = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    return idx.clamp_(max=V - 1)


def check_finite_probs(mass_Bl: torch.Tensor) -> None:
    """Raise ValueError when a position's total probability ``mass`` (B, l) is NaN or infinite.

    Non-finite logits (NaN weights, an overflow in half precision) would otherwise make the
    inverse-CDF draw return the last token V-1 everywhere, silently.
    """
    bad = ~torch.isfinite(mass_Bl)
    if bool(bad.any()):
        raise ValueError(f"the sampling distribution is not finite at {int(bad.sum())} of {bad.numel()} positions "
                         "(NaN or inf logits): the model's weights or its inputs hold non-finite values; in half "
                         "precision, try --dtype fp32")
