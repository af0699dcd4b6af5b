"""Token resampling after a scale's draw: tokens the distribution gives a low probability are
drawn again, from the same distribution (``simple``) or re-predicted by the model from the
scale's confident tokens (``masked``, for models trained with ``masked_objective``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from scalewise.models.transformer import ScaleTransformer
from scalewise.sampling.logits import draw

RESAMPLE_KINDS = ("none", "simple", "masked")
RESAMPLE_SELECT = ("threshold", "lowest")


@dataclass
class Resample:
    """Token resampling after each scale's draw.

    ``simple``: tokens whose probability is below ``threshold`` are re-drawn from the same
    distribution, ``iters`` times. ``masked``: they are re-masked and re-predicted from the
    confident tokens of the scale (needs a model trained with ``masked_objective``), ``iters``
    times, with CFG (``use_cfg``) or the conditional logits only.

    ``select``: ``threshold`` re-masks the tokens below ``threshold``; ``lowest`` (masked only)
    re-masks the ``fraction`` of each image's tokens with the lowest probability under the
    distribution they were drawn from, every iteration (anchored re-masking).
    """

    kind: str = "none"
    threshold: float = 0.05
    iters: int = 2
    use_cfg: bool = True
    min_scale: int = 1  # scales before this (0-based) are not resampled
    select: str = "threshold"  # threshold | lowest
    fraction: float = 0.25  # select lowest: share of each image's tokens re-masked per iteration

    def __post_init__(self) -> None:
        if self.kind not in RESAMPLE_KINDS:
            raise ValueError(f"unknown resample kind {self.kind!r}; allowed: {list(RESAMPLE_KINDS)}")
        if self.select not in RESAMPLE_SELECT:
            raise ValueError(f"unknown resample select {self.select!r}; allowed: {list(RESAMPLE_SELECT)}")
        if self.select == "lowest" and self.kind == "simple":
            raise ValueError("resample select 'lowest' needs kind 'masked' (re-drawing the lowest tokens from "
                             "the same distribution changes nothing in expectation); use select 'threshold'")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"resample fraction must lie in (0, 1], got {self.fraction}")
        if not 0.0 <= self.threshold <= 1.0 or self.iters < 0:
            raise ValueError("resample threshold must lie in [0, 1] and iters be >= 0")

    def check_model(self, model: ScaleTransformer) -> None:
        """Raise ValueError if ``model`` cannot run this resampling (masked needs ``masked_objective``)."""
        if self.kind == "masked" and not model.cfg.masked_objective:
            raise ValueError("masked resampling needs a model trained with masked_objective: true")


def low_confidence(probs_BlV: torch.Tensor, tokens_Bl: torch.Tensor, threshold: float) -> torch.Tensor:
    """Positions (B, l) bool whose token has probability < ``threshold`` under ``probs`` (B, l, V)."""
    return probs_BlV.gather(-1, tokens_Bl.unsqueeze(-1)).squeeze(-1) < threshold


def lowest_scores(scores_Bl: torch.Tensor, fraction: float, keep_Bl: torch.Tensor | None = None) -> torch.Tensor:
    """Positions (B, l) bool: the ``ceil(fraction * free)`` lowest ``scores`` of each row among
    the positions not in ``keep`` (ties broken by position)."""
    s = scores_Bl.float()
    if keep_Bl is not None:
        s = s.masked_fill(keep_Bl, float("inf"))
    free_B = s.isfinite().sum(1) if keep_Bl is not None else torch.full_like(s[:, 0], s.shape[1], dtype=torch.long)
    n_B = (free_B.float() * fraction).ceil().long()
    rank_Bl = s.argsort(dim=1, stable=True).argsort(dim=1)
    return rank_Bl < n_B.unsqueeze(1)


def simple_resample(probs_BlV: torch.Tensor, tokens_Bl: torch.Tensor, threshold: float, iters: int,
                    generator: torch.Generator, keep_Bl: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Re-draw tokens whose probability < ``threshold`` from ``probs``; returns (tokens, iterations run).

    ``keep_Bl`` (B, l) bool: positions never re-drawn (e.g. clamped tokens).
    """
    tokens = tokens_Bl.clone()
    done = 0
    for _ in range(iters):
        low = low_confidence(probs_BlV, tokens, threshold)
        if keep_Bl is not None:
            low &= ~keep_Bl
        if not bool(low.any()):
            break
        tokens = torch.where(low, draw(probs_BlV, generator), tokens)
        done += 1
    return tokens, done


def masked_resample(probs_BlV: torch.Tensor, tokens_Bl: torch.Tensor, threshold: float, iters: int,
                    generator: torch.Generator,
                    repredict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    keep_Bl: torch.Tensor | None = None, select: str = "threshold",
                    fraction: float = 0.25,
                    select_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None,
                    ) -> tuple[torch.Tensor, int]:
    """Re-predict the scale's least likely tokens; returns (tokens (B, l), iterations run).

    ``repredict(tokens_Bl, revealed_Bl)`` is the model's distribution (B, l, V) of the scale
    given its revealed tokens (the others masked). Re-drawn tokens are judged by the
    distribution they came from in the next iteration. ``select``: ``threshold`` (tokens
    with probability < ``threshold``) or ``lowest`` (the ``fraction`` least likely).
    ``keep_Bl`` (B, l) bool: positions never re-masked, always revealed (e.g. clamped tokens).
    ``select_fn(probs, tokens, keep)``: positions (B, l) to re-mask, in place of ``select`` (a
    learned policy, :mod:`scalewise.sampling.adaptive`); it must leave ``keep`` alone.
    """
    tokens, probs = tokens_Bl, probs_BlV
    done = 0
    for _ in range(iters):
        if select_fn is not None:
            low = select_fn(probs, tokens, keep_Bl)
        elif select == "lowest":
            low = lowest_scores(probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), fraction, keep_Bl)
        else:
            low = low_confidence(probs, tokens, threshold)
            if keep_Bl is not None:
                low &= ~keep_Bl
        if not bool(low.any()):
            break
        probs2 = repredict(tokens, ~low)
        tokens = torch.where(low, draw(probs2, generator), tokens)
        probs = torch.where(low.unsqueeze(-1), probs2, probs)
        done += 1
    return tokens, done
