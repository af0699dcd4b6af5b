"""Resumable training state: one atomic checkpoint keyed by the run's configuration and data."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import torch

from scalewise.core.io import load_torch, save_torch


def run_key(config: dict[str, Any], data_hash: str, code: Sequence[ModuleType] = ()) -> str:
    """Identifies a training run: same config, data and training code -> same key -> resumable.

    ``code`` lists the modules whose source defines the run (model and loop), so a changed
    model or loss never resumes a checkpoint written by the old code.
    """
    sources = [hashlib.sha256(inspect.getsource(m).encode()).hexdigest() for m in code]
    blob = json.dumps({"cfg": config, "data": data_hash, "code": sources}, sort_keys=True, default=str)
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


class StepLog:
    """Averages per-step metrics over ``every`` steps into ``history`` and reports each average.

    ``history`` is the list stored in the checkpoint, so a resumed run keeps its curve.
    """

    def __init__(self, every: int, total: int, history: list[dict], on_log=None, bar=None,
                 show: Sequence[str] = ("loss",)):
        self.every, self.total, self.history = every, total, history
        self.on_log, self.bar, self.show = on_log, bar, show
        self._sum: dict[str, float] = {}

    def add(self, step: int, row: dict[str, float]) -> None:
        """Record the metrics of ``step`` (1-based, after the update)."""
        for k, v in row.items():
            self._sum[k] = self._sum.get(k, 0.0) + v
        if step % self.every == 0 or step == self.total:
            n = (step - 1) % self.every + 1
            avg = {k: v / n for k, v in self._sum.items()}
            self._sum = {}
            self.history.append({"step": step, **avg})
            if self.bar is not None:
                self.bar.set_postfix({k: f"{avg[k]:.4g}" for k in self.show})
            if self.on_log is not None:
                self.on_log(step, avg)
