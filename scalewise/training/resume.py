"""Resumable training state: one atomic checkpoint keyed by the run's mathematics and data.

The key (:func:`run_key`) holds the settings that change what is computed (the trainers pass
their ``key_settings()``: no step count, device, threads, log or checkpoint cadence, report
settings), the data, the content of any weights the run starts from, and the source of the
code. ``<state_dir>/last.pt`` resumes when its key matches and its step is at most the run's
``steps``: raising ``steps`` continues from the last checkpoint (with the schedule of the new
total); a checkpoint beyond ``steps`` starts the run afresh with a :class:`ResumeWarning`; an
unreadable one is moved aside to ``last.pt.corrupt`` with a warning, and the run starts fresh.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import torch

from scalewise.core.digest import state_hash, weights_hash  # noqa: F401 (re-exported)
from scalewise.core.io import load_torch, save_torch


class ResumeWarning(UserWarning):
    """A checkpoint was found but cannot be continued (unreadable, or beyond ``steps``)."""


def run_key(config: dict[str, Any], data_hash: str, code: Sequence[ModuleType] = ()) -> str:
    """Identifies a training run: same config, data and training code -> same key -> resumable.

    ``code`` lists the modules whose source defines the run (model and loop), so a changed
    model or loss never resumes a checkpoint written by the old code.
    """
    sources = [hashlib.sha256(inspect.getsource(m).encode()).hexdigest() for m in code]
    blob = json.dumps({"cfg": config, "data": data_hash, "code": sources}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def code_of(model: torch.nn.Module, *extra: Any) -> list[ModuleType]:
    """The project modules that define ``model`` (every sub-module's class) and ``extra`` (objects
    or modules), sorted by name: the ``code`` of :func:`run_key`."""
    names = {type(m).__module__ for m in model.modules()}
    names |= {x.__name__ if isinstance(x, ModuleType) else x.__module__ for x in extra}
    return [sys.modules[n] for n in sorted(names) if n.startswith("scalewise.")]


@dataclass
class Restored:
    """Where a run continues: its step, logged curve and the log's running sums (see :class:`StepLog`)."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    log_state: dict | None = None


class Checkpointer:
    """Saves/restores model, optimiser, step, batch-sampling RNG, the logged curve and the
    log's partial sums, every ``every`` steps and at the last step."""

    def __init__(self, state_dir: str | Path, key: str, model: torch.nn.Module,
                 opt: torch.optim.Optimizer, gen: torch.Generator, every: int):
        self.path = Path(state_dir) / "last.pt"
        self.key, self.model, self.opt, self.gen, self.every = key, model, opt, gen, every

    def _load(self, device: torch.device) -> dict | None:
        try:
            state = load_torch(self.path, map_location=device)
            if not isinstance(state, dict):
                raise ValueError(f"holds a {type(state).__name__}, not a checkpoint")
            return state
        except ValueError as exc:
            aside = self.path.with_name(self.path.name + ".corrupt")
            self.path.replace(aside)
            warnings.warn(f"{self.path}: unreadable checkpoint ({exc}); moved aside to {aside}, "
                          "training starts fresh", ResumeWarning, stacklevel=3)
            return None

    def restore(self, device: torch.device, steps: int) -> Restored:
        """The matching checkpoint's state (loaded into model, optimiser and RNG), or a fresh start."""
        if not self.path.is_file():
            return Restored()
        state = self._load(device)
        if state is None or state.get("run_key") != self.key:
            return Restored()
        if int(state["step"]) > steps:
            warnings.warn(f"{self.path}: the checkpoint is at step {int(state['step'])}, beyond steps={steps}; "
                          "training starts fresh (the checkpoint is replaced at the next save)",
                          ResumeWarning, stacklevel=2)
            return Restored()
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])
        self.gen.set_state(state["rng"].cpu())
        return Restored(int(state["step"]), list(state["history"]), state.get("log"))

    def due(self, step: int, steps: int) -> bool:
        """Whether a checkpoint is written after ``step`` (1-based) of ``steps``."""
        return step % self.every == 0 or step == steps

    def save(self, step: int, history: list[dict], log_state: dict | None = None) -> None:
        """Write the checkpoint of ``step`` atomically."""
        save_torch(self.path, {"run_key": self.key, "step": step, "model": self.model.state_dict(),
                               "optim": self.opt.state_dict(), "rng": self.gen.get_state(), "history": history,
                               "log": log_state})


class StepLog:
    """Averages per-step metrics over ``every`` steps into ``history`` and reports each average.

    ``history`` is the list stored in the checkpoint, so a resumed run keeps its curve; the sums
    of a partly filled average are :meth:`state` (saved with the checkpoint too), so a run
    resumed between two log points logs the same averages as one never interrupted.
    """

    def __init__(self, every: int, total: int, history: list[dict], on_log: Callable | None = None,
                 bar: Any = None, show: Sequence[str] = ("loss",), state: dict | None = None):
        self.every, self.total, self.history = every, total, history
        self.on_log, self.bar, self.show = on_log, bar, show
        self._sum: dict[str, float] = dict((state or {}).get("sum", {}))
        self._n = int((state or {}).get("n", 0))

    def state(self) -> dict:
        """The running sums of the average being filled (plain data)."""
        return {"sum": dict(self._sum), "n": self._n}

    def add(self, step: int, row: dict[str, float]) -> None:
        """Record the metrics of ``step`` (1-based, after the update)."""
        for k, v in row.items():
            self._sum[k] = self._sum.get(k, 0.0) + v
        self._n += 1
        if step % self.every == 0 or step == self.total:
            avg = {k: v / self._n for k, v in self._sum.items()}
            self._sum, self._n = {}, 0
            self.history.append({"step": step, **avg})
            if self.bar is not None:
                self.bar.set_postfix({k: f"{avg[k]:.4g}" for k in self.show})
            if self.on_log is not None:
                self.on_log(step, avg)
