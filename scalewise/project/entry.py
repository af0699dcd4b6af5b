"""The entry layer shared by the stages, the CLI and the flows: the MLflow runs, exit codes, curves."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from scalewise.core.config import ConfigError, T, from_dict
from scalewise.project.params import PARAMS_FILE, load_params, section, tracking_settings
from scalewise.project.tracking import Tracker, pipeline_run, stage_run, summarize_pipeline

__all__ = ["PARAMS_FILE", "load_params", "section", "stage_parser", "stage_config", "tracked", "pipeline_tracked",
           "run_main", "write_curve"]


def stage_parser(doc: str) -> argparse.ArgumentParser:
    """A stage's argument parser (description: the docstring's first line) with ``--params`` and ``--data``."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--params", default=PARAMS_FILE, help="the params file")
    ap.add_argument("--data", default="data/prepared", help="the prepared dataset (stage prepare)")
    return ap


def stage_config(cls: type[T], params: dict[str, Any], name: str, path: str | os.PathLike = PARAMS_FILE) -> T:
    """Section ``name`` of the params (read from ``path``) as the config dataclass ``cls``.

    Raises ConfigError naming the file and the field for a missing section, an unknown key or
    a wrong value.
    """
    return from_dict(cls, section(params, name, path), f"{path}: {name}")


@contextmanager
def tracked(stage: str, params: dict[str, Any], stage_params: dict[str, Any]) -> Iterator[Tracker]:
    """The stage's MLflow run, configured by the ``tracking`` section (tracking may be off)."""
    settings = tracking_settings(params)
    with stage_run(stage, stage_params, enabled=settings.enabled, experiment=settings.experiment) as tracker:
        yield tracker


@contextmanager
def pipeline_tracked(name: str, params: dict[str, Any], root: str | os.PathLike = ".",
                     tags: dict[str, Any] | None = None) -> Iterator[Tracker]:
    """The parent MLflow run of a pipeline / paper-table run (CLI or flow), per ``tracking``."""
    settings = tracking_settings(params, Path(root) / PARAMS_FILE)
    with pipeline_run(name, enabled=settings.enabled, experiment=settings.experiment, root=root,
                      tags=tags) as tracker:
        yield tracker
        summarize_pipeline(tracker, root, params)  # headline metrics, profile params, description


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's ``main()``; bad params/input or a NaN loss exits 2 with one clear line."""
    from scalewise.core.allocator import keep_freed_memory

    keep_freed_memory()
    try:
        main()
    except (ConfigError, FileNotFoundError, FloatingPointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def write_curve(path: str | Path, history: list[dict], cols: list[str]) -> Path:
    """The logged training curve as CSV (a DVC plot), written atomically."""
    from scalewise.core.io import write_text

    lines = [",".join(cols)] + [",".join(f"{row[c]:.6g}" for c in cols) for row in history]
    return write_text(path, "\n".join(lines) + "\n")
