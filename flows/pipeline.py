"""Prefect flow running the DVC pipeline: one task per DVC stage, in DVC's order.

    python -m flows.pipeline [--root .] [--stages prepare,train_tokenizer] [--run-name NAME]

Runs on Prefect's ephemeral API when no ``PREFECT_API_URL`` is set. The stage list and its
order come from DVC itself (there is no second DAG); each task runs
``dvc repro --single-item <stage>``, so DVC skips unchanged stages and Prefect's own result
caching stays off. Retries come from ``params.yaml: pipeline.retries``. One MLflow parent run
wraps the flow run and every stage nests its own run under it (``SCALEWISE_PARENT_RUN_ID``).
The flow ends with a markdown table of every DVC metric: a Prefect artifact (key
``scalewise-metrics``) and ``metrics.md`` in the parent MLflow run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Any, Iterator

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from scalewise.core.config import flatten
from scalewise.project.entry import pipeline_tracked
from scalewise.project.params import PARAMS_FILE, load_params

ARTIFACT_KEY = "scalewise-metrics"
_TAIL_LINES = 30  # lines of stage output quoted in a failure


def stage_order(root: str | os.PathLike) -> list[str]:
    """The stages DVC defines at ``root``, dependencies first, as ``dvc repro`` addresses.

    Names are relative to ``root``: ``prepare`` and ``train@var`` (foreach item) for stages of
    ``root/dvc.yaml``, ``sub/dvc.yaml:name`` for nested pipeline files. Stages without a
    command (data tracked by ``dvc add`` / ``dvc import``) are not steps and are left out.
    """
    import networkx as nx
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    root = Path(root).resolve()
    if not (root / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{root / 'dvc.yaml'}: no DVC pipeline here (run from the project root)")
    try:
        repo = Repo(str(root))
    except NotDvcRepoError as exc:
        raise FileNotFoundError(f"{root}: has a dvc.yaml but is not a DVC repository (run `dvc init`)") from exc
    with repo:
        graph = repo.index.graph  # edge (stage -> stage it depends on)
        names = {stage: _address(stage, Path(repo.root_dir)) for stage in graph.nodes}
        # Reverse the edges so dependencies come first; lexicographic ties keep the order stable.
        order = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=names.__getitem__)
        return [names[stage] for stage in order if getattr(stage, "cmd", None)]


def stages_for(root: str | os.PathLike, targets: list[str] | None = None) -> list[str]:
    """``targets`` and every stage they depend on, in DVC's order (names as ``dvc repro`` takes them).

    The default targets are the stages of ``root/dvc.yaml``: what a plain ``dvc repro`` runs (a
    nested pipeline file such as ``paper/dvc.yaml`` only when a root stage depends on it).
    """
    import networkx as nx
    from dvc.repo import Repo

    order = stage_order(root)
    targets = [s for s in order if ":" not in s] if targets is None else targets
    with Repo(str(Path(root).resolve())) as repo:
        graph = repo.index.graph  # edge: stage -> stage it depends on
        root_dir = Path(repo.root_dir)
        by_name = {_address(s, root_dir): s for s in graph.nodes if getattr(s, "cmd", None)}
        unknown = [t for t in targets if t not in by_name]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; {Path(root) / 'dvc.yaml'} and its nested pipeline files "
                             f"define {order}")
        needed = set()
        for target in targets:
            needed |= {by_name[target]} | nx.descendants(graph, by_name[target])
        names = {_address(s, root_dir) for s in needed}
    return [s for s in order if s in names]


def _address(stage, repo_root: Path) -> str:
    """``stage.addressing`` relative to the repo root (DVC's own is relative to the cwd)."""
    rel = Path(os.path.relpath(stage.path, repo_root)).as_posix()
    name = getattr(stage, "name", None)
    if not name:  # a .dvc file
        return rel
    return name if rel == "dvc.yaml" else f"{rel}:{name}"


def _env() -> dict[str, str]:
    """This process's environment (with ``SCALEWISE_PARENT_RUN_ID``), the venv first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"  # stage output arrives as it is written
    return env


@task(name="dvc-repro", task_run_name="{stage}", cache_policy=NO_CACHE, persist_result=False,
      retries=1, retry_delay_seconds=2)
def run_stage(root: str, stage: str) -> str:
    """``dvc repro --single-item <stage>`` in ``root``, output streamed to the run log; returns ``stage``."""
    logger = get_run_logger()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
        cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    assert proc.stdout is not None
    for raw in proc.stdout:
        # Progress bars redraw with '\r': keep only the last state of each line.
        line = raw.decode(errors="replace").rstrip("\r\n").rsplit("\r", 1)[-1].rstrip()
        if line:
            tail.append(line)
            logger.info("%s | %s", stage, line)
    if proc.wait() != 0:
        raise RuntimeError(f"stage {stage!r} failed (dvc repro exit {proc.returncode}); last output:\n"
                           + "\n".join(tail))
    return stage


def dvc_metrics(root: str | os.PathLike) -> dict[str, Any]:
    """The workspace's DVC metrics as ``{file: {metric: value}}`` (``dvc metrics show --json``).

    A metrics file DVC cannot read maps to ``{"error": message}``.
    """
    proc = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], cwd=root,
                          env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc metrics show failed in {root}:\n{proc.stderr.strip()}")
    shown = json.loads(proc.stdout or "{}")  # {revision ("" = workspace): {"data": {file: entry}}}
    files = next(iter(shown.values()), {}).get("data", {}) if shown else {}
    out: dict[str, Any] = {}
    for file, entry in files.items():
        if "data" in entry:
            out[file] = entry["data"]
        else:
            out[file] = {"error": str(entry.get("error", {}).get("msg", entry))}
    return out


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, list):
        text = "[" + ", ".join(_cell(v) for v in value) + "]"
    else:
        text = str(value)
    return text.replace("|", "\\|")


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """A markdown table of every metric: one row per file and dotted metric name."""
    lines = ["# scalewise metrics", ""]
    if not metrics:
        return "\n".join(lines + ["No DVC metrics in this workspace.", ""])
    lines += ["| file | metric | value |", "|---|---|---|"]
    for file, values in metrics.items():
        for key, value in flatten(values if isinstance(values, dict) else {"value": values}).items():
            lines.append(f"| {_cell(file)} | {_cell(key)} | {_cell(value)} |")
    return "\n".join(lines) + "\n"


@flow(name="scalewise-pipeline", persist_result=False)
def pipeline(root: str = ".", stages: list[str] | None = None, run_name: str | None = None) -> dict:
    """Run the DVC stages of ``root/dvc.yaml`` (or the subset ``stages``, of any pipeline file) in DVC's
    order; return the metrics."""
    from prefect.runtime import flow_run

    logger = get_run_logger()
    root_path = Path(root).resolve()
    params = load_params(root_path / PARAMS_FILE)
    retries = int((params.get("pipeline") or {}).get("retries", 1))
    if stages:
        order = stage_order(root_path)
        unknown = sorted(set(stages) - set(order))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; {root_path / 'dvc.yaml'} defines {order}")
        order = [s for s in order if s in stages]
    else:  # what `dvc repro` runs: root/dvc.yaml (the paper studies are the paper-table flow's)
        order = stages_for(root_path)
    logger.info("stages in DVC order: %s", ", ".join(order))

    # cwd = root for the parent run too: MLflow resolves a new experiment's default artifact
    # root against the cwd, and the stage processes run there.
    with contextlib.chdir(root_path), pipeline_tracked(
        run_name or f"pipeline/{flow_run.name or 'local'}", params, root=root_path,
        tags={"scalewise.orchestrator": "prefect", "scalewise.prefect_flow_run_id": flow_run.id or ""},
    ) as tracker:
        stage_task = run_stage.with_options(retries=retries)
        for stage in order:  # one at a time: DVC holds a repo lock during each repro
            stage_task(str(root_path), stage)
        metrics = dvc_metrics(root_path)
        markdown = metrics_markdown(metrics)
        create_markdown_artifact(markdown=markdown, key=ARTIFACT_KEY,
                                 description=f"DVC metrics of {root_path} after the pipeline run")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "metrics.md"
            path.write_text(markdown)
            tracker.log_artifact(path)
    return metrics


def flow_parser(description: str) -> argparse.ArgumentParser:
    """A flow's command line with ``--root`` and ``--run-name``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--root", default=".", help="project root holding dvc.yaml and params.yaml")
    ap.add_argument("--run-name", default=None, help="name of the parent MLflow run")
    return ap


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Exit 1 with one clear line on an error (Prefect has logged the traceback)."""
    try:
        yield
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    ap = flow_parser("Run the scalewise DVC pipeline as a Prefect flow.")
    ap.add_argument("--stages", default=None, help="comma-separated subset of stages (default: all)")
    args = ap.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    with one_line_errors():
        pipeline(root=args.root, stages=stages, run_name=args.run_name)


if __name__ == "__main__":
    main()
