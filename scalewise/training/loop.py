"""The training loop of every trainer: schedule, NaN guard, optimiser step, logs and checkpoints.

A trainer builds its model, optimiser and batch generator, then hands :func:`fit` a step
function: given the (0-based) step it draws its batch and returns the loss and how to turn it
into the logged row. The loop sets the learning rate, backpropagates, clips, steps the
optimiser, calls ``after_step`` (the tokenizer revives dead codes there), logs the averaged
rows and writes the checkpoint, in that order, every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from scalewise.training.resume import Checkpointer, Restored, StepLog
from scalewise.training.schedule import lr_at, set_lr


@dataclass
class StepOut:
    """What a step function returns.

    ``row(loop_values)`` builds the logged metrics of the step once the optimiser has stepped;
    ``loop_values`` holds ``grad_norm`` (when clipping) and ``lr``, for the row to place.
    """

    loss: torch.Tensor  # the scalar that is backpropagated
    row: Callable[[dict[str, float]], dict[str, float]]


@dataclass
class Schedule:
    """The loop's arithmetic settings: how many steps, the learning-rate schedule and clipping."""

    steps: int
    lr: float
    warmup_steps: int
    grad_clip: float | None = None  # max global gradient norm; None = no clipping (no grad_norm)


@dataclass
class TrainResult:
    """A finished run: its model (eval mode), the logged rows and where it started."""

    model: torch.nn.Module
    history: list[dict]  # one row per logged step
    resumed_from: int  # 0 when started fresh
    steps_run: int  # optimiser steps taken by this call


@dataclass
class Report:
    """Where the loop reports: the averaged rows (``every`` steps), the bar and ``on_log``."""

    name: str  # the run's name in the bar and in errors
    hint: str  # what to change when the loss is not finite
    every: int | None = None  # steps per history row; None = no history
    show: Sequence[str] = ("loss",)  # metrics shown on the bar
    on_log: Callable[[int, dict], None] | None = None
    progress: bool = True


def fit(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Schedule, step_fn: Callable[[int], StepOut],
        report: Report, ckpt: Checkpointer | None = None,
        after_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``model`` for ``sched.steps`` steps (from its checkpoint, if ``ckpt`` has one).

    Raises:
        FloatingPointError: the loss became NaN/inf (the last checkpoint is kept).
    """
    device = next(model.parameters()).device
    start = ckpt.restore(device, sched.steps) if ckpt is not None else Restored()
    step, history = start.step, start.history
    bar = tqdm(total=sched.steps, initial=step, desc=report.name, disable=not report.progress)
    log = None
    if report.every is not None:
        log = StepLog(report.every, sched.steps, history, report.on_log, bar, report.show, start.log_state)
    model.train()
    while step < sched.steps:
        lr = lr_at(step, sched.lr, sched.warmup_steps, sched.steps)
        set_lr(opt, lr)
        out = step_fn(step)
        if not torch.isfinite(out.loss):
            kept = f"the last good checkpoint ({ckpt.path}) is kept. " if ckpt is not None else ""
            raise FloatingPointError(f"{report.name}: loss is {out.loss.item()} at step {step}; {kept}{report.hint}")
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        values: dict[str, float] = {}
        if sched.grad_clip is not None:
            values["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), sched.grad_clip))
        opt.step()
        if after_step is not None:
            after_step(step)
        step += 1
        bar.update(1)
        if log is not None:
            values["lr"] = lr
            log.add(step, out.row(values))
        if ckpt is not None and ckpt.due(step, sched.steps):
            ckpt.save(step, history, log.state() if log is not None else None)
    bar.close()
    model.eval()
    return TrainResult(model=model, history=history, resumed_from=start.step, steps_run=step - start.step)
