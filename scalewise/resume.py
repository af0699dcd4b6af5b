"""Resumable training state: one atomic checkpoint keyed by the run's configuration and data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from scalewise.io import load_torch, save_torch


def run_key(config: dict[str, Any], data_hash: str) -> str:
    """Identifies a training run: same config and data -> same key -> resumable."""
    blob = json.dumps({"cfg": config, "data": data_hash}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Checkpointer:
    """Saves/restores model, optimiser, step, batch-sampling RNG and the logged curve.

    ``restore()`` loads ``<state_dir>/last.pt`` only when it was written for the same
    ``key``; otherwise training starts fresh (the stale file is overwritten at the next save).
    """

    def __init__(self, state_dir: str | Path, key: str, model: torch.nn.Module,
                 opt: torch.optim.Optimizer, gen: torch.Generator):
        self.path = Path(state_dir) / "last.pt"
        self.key, self.model, self.opt, self.gen = key, model, opt, gen

    def restore(self, device: torch.device) -> tuple[int, list[dict]]:
        """(step, history) of the matching checkpoint, or (0, []) when there is none."""
        if not self.path.is_file():
            return 0, []
        state = load_torch(self.path, map_location=device)
        if state.get("run_key") != self.key:
            return 0, []
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])
        self.gen.set_state(state["rng"].cpu())
        return int(state["step"]), list(state["history"])

    def save(self, step: int, history: list[dict]) -> None:
        save_torch(self.path, {"run_key": self.key, "step": step, "model": self.model.state_dict(),
                               "optim": self.opt.state_dict(), "rng": self.gen.get_state(), "history": history})
