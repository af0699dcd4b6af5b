"""The settings every trainer shares, their checks, and which of them define a run.

Each trainer's params section is a dataclass derived from one of these. ``NOT_IN_KEY`` names
the settings that do not change the training mathematics: they are left out of the resume key
(:func:`scalewise.training.resume.run_key`), so changing them continues (or re-renders) a run
instead of restarting it. ``steps`` is among them: raising it continues from the last
checkpoint, with the learning-rate schedule laid over the new total from there on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from scalewise.core.config import ConfigError, to_dict
from scalewise.core.device import DEVICE_KINDS

# (field, kind, allowed values in words, test of the value); kind is "int", "number" or "bool"
Rule = tuple[str, str, str, Callable[[Any], bool]]


def _is(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


def at_least(name: str, low: float, kind: str = "int") -> Rule:
    """``name`` is a ``kind`` (int or number) >= ``low``."""
    return (name, kind, f">= {low:g}", lambda v: v >= low)


def above(name: str, low: float) -> Rule:
    """``name`` is a number > ``low``."""
    return (name, "number", f"> {low:g}", lambda v: v > low)


def fraction(name: str) -> Rule:
    """``name`` is a number in [0, 1)."""
    return (name, "number", "in [0, 1)", lambda v: 0.0 <= v < 1.0)


def integer(name: str) -> Rule:
    """``name`` is an integer."""
    return (name, "int", "an integer", lambda v: True)


def flag(name: str) -> Rule:
    """``name`` is true or false."""
    return (name, "bool", "true or false", lambda v: True)


@dataclass
class TrainSettings:
    """What every trainer has: the optimiser's step count, batch, learning rate and decay, the seed
    and the device."""

    steps: int = 1000  # optimiser steps
    batch_size: int = 32
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    seed: int = 0  # initialisation, batch order and every random choice of the loop
    device: str = "cpu"  # cpu | cuda | cuda:N | mps

    SECTION: ClassVar[str] = "train"  # where the settings live in params.yaml (named in errors)
    NOT_IN_KEY: ClassVar[tuple[str, ...]] = ("steps", "device")

    def rules(self) -> list[Rule]:
        """The checks of ``__post_init__`` (derived settings add their own)."""
        return [at_least("steps", 1), at_least("batch_size", 1), above("lr", 0.0),
                at_least("weight_decay", 0.0, "number"), integer("seed")]

    def __post_init__(self) -> None:
        for name, kind, allowed, ok in self.rules():
            value = getattr(self, name)
            if not _is(kind, value):
                what = {"int": "an integer", "number": "a finite number", "bool": "true or false"}[kind]
                raise ConfigError(f"{self.SECTION}.{name} must be {what}, got {value!r}")
            if not ok(value):
                raise ConfigError(f"{self.SECTION}.{name} must be {allowed}, got {value!r}")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in DEVICE_KINDS:
            raise ConfigError(f"{self.SECTION}.device must be cpu, cuda, cuda:N or mps, got {self.device!r}")

    def key_settings(self) -> dict[str, Any]:
        """The settings that define the run's mathematics: all but ``NOT_IN_KEY``."""
        return {k: v for k, v in to_dict(self).items() if k not in self.NOT_IN_KEY}


@dataclass
class LoggedSettings(TrainSettings):
    """A resumable run: learning-rate warm-up, averaged logs and checkpoints."""

    warmup_steps: int = 100  # linear warm-up, then cosine decay to 10% over ``steps``
    log_every: int = 25  # steps per logged average (one history row)
    ckpt_every: int = 200  # steps between checkpoints (state/<stage>/last.pt)

    NOT_IN_KEY: ClassVar[tuple[str, ...]] = TrainSettings.NOT_IN_KEY + ("log_every", "ckpt_every")

    def rules(self) -> list[Rule]:
        return super().rules() + [at_least("warmup_steps", 0), at_least("log_every", 1),
                                  at_least("ckpt_every", 1)]


@dataclass
class TokenTrainSettings(LoggedSettings):
    """Training a next-scale transformer on tokenizer codes (``train.common`` and ``distill``)."""

    weight_decay: float = 0.05
    grad_clip: float = 2.0  # max global gradient norm
    masked_prob: float = 0.25  # fraction of rows trained on the masked objective
    grid_per_class: int = 4  # samples per class in the stage's sample grid
    grid_cfg: float = 1.5  # guidance of the sample grid
    threads: int = 0  # torch threads (0 = torch default)

    NOT_IN_KEY: ClassVar[tuple[str, ...]] = LoggedSettings.NOT_IN_KEY + ("grid_per_class", "grid_cfg", "threads")

    def rules(self) -> list[Rule]:
        return super().rules() + [above("grad_clip", 0.0), fraction("masked_prob"), at_least("grid_per_class", 1),
                                  at_least("grid_cfg", 0.0, "number"), at_least("threads", 0)]
