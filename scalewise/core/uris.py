"""MLflow model URIs as the CLI and :func:`scalewise.load` accept them (no imports: the CLI parses with it)."""

from __future__ import annotations

import os

URI_SCHEMES = ("models:/", "runs:/")


def is_model_uri(value: str | os.PathLike | None) -> bool:
    """True for an MLflow model URI (``models:/scalewise-srdd@champion``, ``runs:/<id>/model``)."""
    return isinstance(value, str) and value.startswith(URI_SCHEMES)
