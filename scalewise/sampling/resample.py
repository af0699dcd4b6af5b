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


@dataclass
class Resample:
    """Token resampling after each scale's draw.

    ``simple``: tokens whose probability is below ``threshold`` are re-drawn from the same
    distribution, ``iters`` times. ``masked``: they are re-masked and re-predicted from the
    confident tokens of the scale (needs a model trained with ``masked_objective``), ``iters``
    times, with CFG (``use_cfg``) or the conditional logits only.
    """

    kind: str = "none"
    threshold: float = 0.05
    iters: int = 2
    use_cfg: bool = True
    min_scale: int = 1  # scales before this (0-based) are not resampled

    def __post_init__(self) -> None:
        if self.kind not in RESAMPLE_KINDS:
            raise ValueError(f"unknown resample kind {self.kind!r}; allowed: {list(RESAMPLE_KINDS)}")
        if not 0.0 <= self.threshold <= 1.0 or self.iters < 0:
            raise ValueError("resample threshold must lie in [0, 1] and iters be >= 0")

    def check_model(self, model: ScaleTransformer) -> None:
        """Raise ValueError if ``model`` cannot run this resampling (masked needs ``masked_objective``)."""
        if self.kind == "masked" and not model.cfg.masked_objective:
            raise ValueError("masked resampling needs a model trained with masked_objective: true")


def low_confidence(probs_BlV: torch.Tensor, tokens_Bl: torch.Tensor, threshold: float) -> torch.Tensor:
    """Positions (B, l) bool whose token has probability < ``threshold`` under ``probs`` (B, l, V)."""
    return probs_BlV.gather(-1, tokens_Bl.unsqueeze(-1)).squeeze(-1) < threshold


def simple_resample(probs_BlV: torch.Tensor, tokens_Bl: torch.Tensor, threshold: float, iters: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """Re-draw tokens whose probability < ``threshold`` from ``probs``; returns (tokens, iterations run)."""
    tokens = tokens_Bl.clone()
    done = 0
    for _ in range(iters):
        low = low_confidence(probs_BlV, tokens, threshold)
        if not bool(low.any()):
            break
        tokens = torch.where(low, draw(probs_BlV, generator), tokens)
        done += 1
    return tokens, done


def masked_resample(probs_BlV: torch.Tensor, tokens_Bl: torch.Tensor, threshold: float, iters: int,
                    generator: torch.Generator,
                    repredict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Re-predict tokens whose probability < ``threshold``; returns (tokens (B, l), iterations run).

    ``repredict(tokens_Bl, revealed_Bl)`` is the model's distribution (B, l, V) of the scale
    given its revealed tokens (the others masked). Re-drawn tokens are judged by the
    distribution they came from in the next iteration.
    """
    tokens, probs = tokens_Bl, probs_BlV
    done = 0
    for _ in range(iters):
        low = low_confidence(probs, tokens, threshold)
        if not bool(low.any()):
            break
        probs2 = repredict(tokens, ~low)
        tokens = torch.where(low, draw(probs2, generator), tokens)
        probs = torch.where(low.unsqueeze(-1), probs2, probs)
        done += 1
    return tokens, done
