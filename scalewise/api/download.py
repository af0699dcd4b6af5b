"""A logged sampler's files from the MLflow store (``models:/...``, ``runs:/...``), for :func:`scalewise.load`.

The models are logged and registered by :mod:`scalewise.project.registry`.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def download_sampler(uri: str) -> Iterator[dict[str, Path]]:
    """``{"transformer": path, "tokenizer": path}`` of a logged sampler (``models:/name@alias``,
    ``models:/name/3``, ``runs:/<id>/model``), in a temporary folder removed on exit.

    The tracking store is ``MLFLOW_TRACKING_URI`` or the project's ``mlflow.db``. Raises
    ValueError naming the URI when it does not resolve or holds no scalewise sampler.
    """
    import mlflow

    from scalewise.core.uris import default_tracking_uri

    mlflow.set_tracking_uri(default_tracking_uri())
    with tempfile.TemporaryDirectory(prefix="scalewise-model-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except Exception as exc:  # MlflowException and friends: one clear line
            raise ValueError(f"{uri}: cannot be loaded from the MLflow store {default_tracking_uri()} "
                             f"({str(exc).splitlines()[0]}); list the registered models with "
                             "`mlflow models` / the MLflow UI, or pass model files") from None
        files = {key: next(iter(sorted(local.rglob(f"artifacts/{key}.pt"))), None) for key in ("transformer", "tokenizer")}
        if None in files.values():
            raise ValueError(f"{uri}: not a scalewise sampler (no artifacts/transformer and artifacts/tokenizer)")
        yield files  # type: ignore[misc]
