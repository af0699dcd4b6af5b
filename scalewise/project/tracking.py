"""The one place that talks to MLflow.

Default store: the embedded SQLite database ``mlflow.db`` at the project root (artifacts in
``mlruns/``); set ``MLFLOW_TRACKING_URI`` to use a server instead.

Run hierarchy: one *parent* run per pipeline run (:func:`pipeline_run`), whose id is passed
to the stage processes in the environment variable ``SCALEWISE_PARENT_RUN_ID``; each stage
opens a *nested* run under it (:func:`stage_run`). A stage run outside a pipeline run (plain
``dvc repro`` or ``scalewise stage NAME``) is a top-level run tagged with its stage.
When tracking is disabled every call is a no-op, so stages never depend on MLflow.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from scalewise.core.config import flatten
from scalewise.core.uris import default_tracking_uri  # noqa: F401  (re-exported: the one place for the store)

PARENT_ENV = "SCALEWISE_PARENT_RUN_ID"
ORDER_TAG = "scalewise.stage_order"
PIPELINE_OUTPUTS = ("dvc.lock", "metrics/", "plots/", "reports/")  # tracked files a pipeline run rewrites
_MAX_PARAM_LEN = 6000




def git_commit(root: str | os.PathLike = ".") -> str:
    """The HEAD commit of the repository at ``root`` (with ``-dirty`` if modified), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.splitlines()
        # A pipeline run rewrites dvc.lock and its metrics / plots / tables: not a dirty source tree.
        dirty = [line for line in changed if not line[3:].startswith(PIPELINE_OUTPUTS)]
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def in_mib(name: str, value: float) -> tuple[str, float]:
    """A metric as MLflow shows it: sizes in bytes (``*_bytes``) become MiB (``*_mib``)."""
    if name.endswith("_bytes"):
        return name[: -len("_bytes")] + "_mib", value / 2**20
    return name, value


def artifact_name(path: str | os.PathLike) -> str:
    """The name a file gets in a run's artifacts: one name per kind, so the MLflow compare view
    can set runs side by side. A stage's metrics file (``metrics/**.json``) is ``metrics.json``,
    its training curve (``plots/*.csv``) ``curve.csv``; any other file keeps its own name."""
    parts = Path(path).parts
    if "metrics" in parts[:-1] and parts[-1].endswith(".json"):
        return "metrics.json"
    if "plots" in parts[:-1] and parts[-1].endswith(".csv"):
        return "curve.csv"
    return parts[-1]


class Tracker:
    """Logs to one MLflow run, or does nothing when ``run_id`` is None (tracking off)."""

    def __init__(self, run_id: str | None = None):
        self.run_id = run_id

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    def client(self):
        """The ``mlflow.MlflowClient`` of the tracking store this run lives in."""
        import mlflow

        return mlflow.MlflowClient()

    _client = client

    def log_params(self, params: dict[str, Any]) -> None:
        """Log a (nested) dict of params, flattened to dotted keys."""
        if not self.enabled:
            return
        from mlflow.entities import Param

        flat = {k: str(v)[:_MAX_PARAM_LEN] for k, v in flatten(params).items()}
        self._client().log_batch(self.run_id, params=[Param(k, v) for k, v in flat.items()])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log scalar metrics (non-scalars are skipped) at ``step``; ``*_bytes`` as ``*_mib`` (:func:`in_mib`)."""
        if not self.enabled:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [
            Metric(*in_mib(k, float(v)), now, step or 0)
            for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        if rows:
            self._client().log_batch(self.run_id, metrics=rows)

    def log_series(self, name: str, values: Sequence[float]) -> None:
        """Log a per-scale (or per-index) series as the metric ``name`` at steps 1..len(values)."""
        for k, value in enumerate(values, start=1):
            self.log_metrics({name: value}, step=k)

    def log_artifacts(self, paths: Sequence[str | os.PathLike], artifact_path: str | None = None) -> None:
        """:meth:`log_artifact` of each of ``paths``."""
        for path in paths:
            self.log_artifact(path, artifact_path)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Copy a file (or folder) into the run's artifacts, under :func:`artifact_name`."""
        if not self.enabled:
            return
        path = Path(path)
        client = self._client()
        if path.is_dir():
            client.log_artifacts(self.run_id, str(path), artifact_path)
            return
        name = artifact_name(path)
        if name == path.name:
            client.log_artifact(self.run_id, str(path), artifact_path)
            return
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory(prefix="scalewise-artifact-") as tmp:
            shutil.copyfile(path, Path(tmp) / name)
            client.log_artifact(self.run_id, str(Path(tmp) / name), artifact_path)

    def log_model(self, transformer: str | os.PathLike, tokenizer: str | os.PathLike) -> str | None:
        """Log the sampler (transformer + tokenizer files) as the run's MLflow model; its URI.

        See :mod:`scalewise.project.registry` (the ``report`` stage registers it).
        """
        if not self.enabled:
            return None
        from scalewise.project.registry import log_sampler

        return log_sampler(transformer, tokenizer)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if not self.enabled:
            return
        client = self._client()
        for key, value in tags.items():
            client.set_tag(self.run_id, key, str(value))


def stage_order(stage: str, root: str | os.PathLike = ".") -> int:
    """The position of ``stage`` (``reconstruct@var-sr_x4`` counts as ``reconstruct``) in the
    pipeline's definition order: ``dvc.yaml``'s stages, then ``paper/dvc.yaml``'s; 99 if absent.
    Stage runs carry it as the tag ``scalewise.stage_order``: sorting by it lists them in pipeline order."""
    import yaml

    names: list[str] = []
    for path in (Path(root) / "dvc.yaml", Path(root) / "paper" / "dvc.yaml"):
        try:
            names += list((yaml.safe_load(path.read_text()) or {}).get("stages", {}))
        except (OSError, yaml.YAMLError):
            continue
    base = stage.split("@")[0]
    return names.index(base) if base in names else 99


def summarize_pipeline(tracker: "Tracker", root: str | os.PathLike = ".",
                       params: dict[str, Any] | None = None) -> None:
    """Give a parent run its summary: the headline metrics (``metrics/headline.json``, as
    ``<model>/fid``, ``<model>/guided_psnr/<task>``, ...), the profile's main parameters and a
    description (the UI's note) listing them."""
    if not tracker.enabled:
        return
    import json

    path = Path(root) / "metrics" / "headline.json"
    headline = json.loads(path.read_text()) if path.is_file() else {}
    tracker.log_metrics(headline)
    shown = {k: v for k, v in flatten(params or {}).items() if k.split(".")[0] in SUMMARY_SECTIONS}
    for start in range(0, len(shown), 100):  # MLflow takes at most 100 params per batch
        tracker.log_params(dict(list(shown.items())[start:start + 100]))
    lines = ["scalewise pipeline run: headline numbers (`metrics/headline.json`; the stage runs hold the rest)", ""]
    for model, values in headline.items():
        gen = ", ".join(f"{k} {values[k]:.4g}" for k in ("fid", "isc", "precision", "recall", "images_per_s")
                        if k in values)
        psnr = ", ".join(f"{task} {db:.2f}" for task, db in (values.get("guided_psnr") or {}).items())
        lines.append(f"- **{model}**: {gen}" + (f"; guided PSNR (dB): {psnr}" if psnr else ""))
    tracker.set_tags({"mlflow.note.content": "\n".join(lines)})


SUMMARY_SECTIONS = ("prepare", "train_tokenizer", "train", "evaluate")  # the parent run's params: the profile


def _setup(experiment: str, root: str | os.PathLike) -> None:
    import mlflow

    mlflow.set_tracking_uri(default_tracking_uri(root))
    mlflow.set_experiment(experiment)


@contextmanager
def stage_run(
    stage: str,
    params: dict[str, Any],
    enabled: bool = True,
    experiment: str = "scalewise",
    root: str | os.PathLike = ".",
) -> Iterator[Tracker]:
    """Open the MLflow run of one stage; yields a :class:`Tracker`.

    Nested under ``$SCALEWISE_PARENT_RUN_ID`` when set. The run is marked FAILED if the
    block raises, FINISHED otherwise.
    """
    if not enabled:
        yield Tracker(None)
        return
    import mlflow

    _setup(experiment, root)
    tags = {"scalewise.stage": stage, "scalewise.git_commit": git_commit(root),
            ORDER_TAG: f"{stage_order(stage, root):02d}"}
    parent = os.environ.get(PARENT_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    experiment_name = os.environ.get("DVC_EXP_NAME")  # set by DVC inside `dvc exp run` experiments
    if experiment_name:
        tags["scalewise.dvc_experiment"] = experiment_name
    run = mlflow.start_run(run_name=f"{experiment_name}/{stage}" if experiment_name else stage, tags=tags)
    tracker = Tracker(run.info.run_id)
    try:
        tracker.log_params(params)
        yield tracker
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


@contextmanager
def pipeline_run(
    name: str,
    enabled: bool = True,
    experiment: str = "scalewise",
    root: str | os.PathLike = ".",
    tags: dict[str, Any] | None = None,
) -> Iterator[Tracker]:
    """Open the parent run of one pipeline run and export its id to child processes."""
    if not enabled:
        yield Tracker(None)
        return
    import mlflow

    _setup(experiment, root)
    all_tags = {"scalewise.kind": "pipeline", "scalewise.git_commit": git_commit(root)}
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    client = mlflow.MlflowClient()
    exp = mlflow.get_experiment_by_name(experiment)
    run = client.create_run(exp.experiment_id, run_name=name, tags=all_tags)
    run_id = run.info.run_id
    previous = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = run_id
    status = "FAILED"
    try:
        yield Tracker(run_id)
        status = "FINISHED"
    finally:
        if previous is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = previous
        client.set_terminated(run_id, status)
