"""Content hashes of weights: identify a model's exact parameters in run keys and model files."""

from __future__ import annotations

import hashlib
from typing import Mapping

import torch


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (16 hex digits) of a state dict's names and tensor bytes: identifies weights in run keys."""
    h = hashlib.sha256()
    for name, t in state.items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def weights_hash(module: torch.nn.Module) -> str:
    """:func:`state_hash` of a module's state: identifies a teacher or tokenizer in run keys."""
    return state_hash(module.state_dict())
