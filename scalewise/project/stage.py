"""The entry layer shared by the stages, the CLI and the flows: params, the stage's MLflow run, exit codes."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from scalewise.core.config import ConfigError
from scalewise.project.tracking import Tracker, stage_run

PARAMS_FILE = "params.yaml"


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole params file as a dict; a clear error if it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the project root)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def section(params: dict[str, Any], name: str, path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """One section of the params; a clear error naming the file if it is missing."""
    if name not in params or not isinstance(params[name], dict):
        raise ConfigError(f"{path}: missing section '{name}:' (see the default params.yaml)")
    return params[name]


@contextmanager
def tracked(stage: str, params: dict[str, Any], stage_params: dict[str, Any]) -> Iterator[Tracker]:
    """The stage's MLflow run, configured by the ``tracking`` section (tracking may be off)."""
    tracking = params.get("tracking", {}) or {}
    with stage_run(
        stage,
        stage_params,
        enabled=bool(tracking.get("enabled", True)),
        experiment=str(tracking.get("experiment", "scalewise")),
    ) as tracker:
        yield tracker


def run_main(main) -> None:
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
