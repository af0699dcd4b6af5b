"""The params file: the one loader used by the stages, the CLI and the flows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scalewise.core.config import ConfigError, from_dict

PARAMS_FILE = "params.yaml"


def load_params(path: str | Path = PARAMS_FILE, missing_ok: bool = False) -> dict[str, Any]:
    """The whole params file as a dict; a clear error if it is missing or not a mapping.

    ``missing_ok``: an absent file reads as ``{}`` (commands that also work without one).
    """
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return {}
        raise ConfigError(f"{path}: params file not found (run from the project root or pass its path)")
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


@dataclass
class TrackingSettings:
    """``params.yaml: tracking``."""

    enabled: bool = True  # false: stages run without MLflow
    experiment: str = "scalewise"  # MLflow experiment name


def tracking_settings(params: dict[str, Any], path: str | Path = PARAMS_FILE) -> TrackingSettings:
    """The ``tracking`` section (defaults when absent)."""
    return from_dict(TrackingSettings, params.get("tracking") or {}, f"{path}: tracking")
