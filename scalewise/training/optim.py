"""The AdamW optimiser of every trainer: which parameters decay, in which order."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

# (parameter name, parameter) -> True when the parameter takes no weight decay
NoDecay = Callable[[str, nn.Parameter], bool]


def no_decay_transformer(name: str, p: nn.Parameter) -> bool:
    """Vectors (norms, biases), embeddings and position tables take no weight decay."""
    return not (p.dim() >= 2 and "emb" not in name and "pos" not in name)


def no_decay_vectors(name: str, p: nn.Parameter) -> bool:
    """Vectors (BatchNorm weights, biases) take no weight decay."""
    return p.dim() <= 1


def adamw(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
          no_decay: NoDecay | None = None) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters in ``named_parameters`` order.

    ``no_decay``: None puts every parameter in one group decayed by ``weight_decay``; otherwise
    two groups, first the decayed parameters, then those ``no_decay`` picks (weight decay 0).
    """
    named = list(model.named_parameters())
    if no_decay is None:
        return torch.optim.AdamW([p for _, p in named], lr=lr, betas=betas, weight_decay=weight_decay)
    decay = [p for n, p in named if not no_decay(n, p)]
    rest = [p for n, p in named if no_decay(n, p)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=betas)
