"""MLflow URIs: the tracking store and the model URIs the CLI and :func:`scalewise.load` accept
(no heavy imports: the CLI parses with it)."""

from __future__ import annotations

import os
from pathlib import Path

URI_SCHEMES = ("models:/", "runs:/")


def is_model_uri(value: str | os.PathLike | None) -> bool:
    """True for an MLflow model URI (``models:/scalewise-srdd@champion``, ``runs:/<id>/model``)."""
    return isinstance(value, str) and value.startswith(URI_SCHEMES)


def default_tracking_uri(root: str | os.PathLike = ".") -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<root>/mlflow.db`` (the project's own store)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"
