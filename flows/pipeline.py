"""Prefect flow running the DVC pipeline: one task per DVC stage, in DVC's order.

    python -m flows.pipeline [--root .] [--stages prepare,train_vqvae]

Runs on Prefect's ephemeral API when no ``PREFECT_API_URL`` is set. The stage list and its
order come from DVC itself; each task runs ``dvc repro --single-item <stage>`` (DVC skips
unchanged stages), with retries from ``params.yaml: pipeline.retries``. One MLflow parent run
wraps the whole flow run; every stage nests its own run under it. The flow ends with a
markdown artifact (key ``scalewise-metrics``) of every DVC metric.
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
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from scalewise.config import flatten
from scalewise.tracking import pipeline_run


def stage_order(root: str | os.PathLike) -> list[str]:
    """DVC's stages of the project at ``root`` (``train@var`` for foreach items), dependencies first."""
    import networkx as nx
    from dvc.repo import Repo

    root = Path(root)
    if not (root / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{root / 'dvc.yaml'}: no DVC pipeline here (run from the project root)")
    with contextlib.chdir(root), Repo(".") as repo:  # addressing relative to root
        graph = repo.index.graph  # edge (stage, dependency)
        order = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=lambda s: s.addressing)
        return [stage.addressing for stage in order]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@task(cache_policy=NO_CACHE, persist_result=False, retry_delay_seconds=2)
def run_stage(root: str, stage: str) -> str:
    """``dvc repro --single-item <stage>`` in ``root``; returns the stage name."""
    logger = get_run_logger()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
        cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    tail: deque[str] = deque(maxlen=30)
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail.append(line)
        if line:
            logger.info("%s | %s", stage, line)
    if proc.wait() != 0:
        raise RuntimeError(f"stage {stage!r} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return stage


def dvc_metrics(root: str) -> dict[str, Any]:
    """``dvc metrics show --json`` of the workspace as ``{file: {metric: value}}``."""
    out = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], cwd=root, env=_env(),
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out or "{}")
    files = data.get("workspace", {}).get("data", {}) if "workspace" in data else data
    return {name: content.get("data", content) for name, content in files.items()}


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """A markdown table of every metric (nested keys dotted, lists shown compactly)."""
    lines = ["# scalewise metrics", "", "| file | metric | value |", "|---|---|---|"]
    for file, values in metrics.items():
        for key, value in flatten(values if isinstance(values, dict) else {"value": values}).items():
            if isinstance(value, float):
                text = f"{value:.4g}"
            elif isinstance(value, list):
                text = "[" + ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in value) + "]"
            else:
                text = str(value)
            lines.append(f"| {file} | {key} | {text} |")
    return "\n".join(lines) + "\n"


@flow(name="scalewise-pipeline", persist_result=False)
def pipeline(root: str = ".", stages: list[str] | None = None, run_name: str | None = None) -> dict:
    """Run the DVC stages of ``root`` (all, or ``stages``) in order; return the DVC metrics."""
    root = str(Path(root).resolve())
    params = yaml.safe_load((Path(root) / "params.yaml").read_text()) or {}
    tracking = params.get("tracking", {}) or {}
    retries = int((params.get("pipeline", {}) or {}).get("retries", 1))
    order = stage_order(root)
    if stages:
        unknown = sorted(set(stages) - set(order))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; DVC defines {order}")
        order = [s for s in order if s in stages]
    logger = get_run_logger()
    logger.info("stages in DVC order: %s", ", ".join(order))
    with pipeline_run(run_name or "pipeline", enabled=bool(tracking.get("enabled", True)),
                      experiment=str(tracking.get("experiment", "scalewise")), root=root,
                      tags={"scalewise.orchestrator": "prefect"}) as tracker:
        for stage in order:  # sequential: DVC takes a repo lock per repro
            run_stage.with_options(retries=retries)(root, stage)
        metrics = dvc_metrics(root)
        markdown = metrics_markdown(metrics)
        create_markdown_artifact(markdown=markdown, key="scalewise-metrics",
                                 description="DVC metrics after the pipeline run")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "metrics.md"
            path.write_text(markdown)
            tracker.log_artifact(path)
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Run the scalewise DVC pipeline as a Prefect flow.")
    ap.add_argument("--root", default=".", help="project root holding dvc.yaml and params.yaml")
    ap.add_argument("--stages", default=None, help="comma-separated subset of stages (default: all)")
    args = ap.parse_args(argv)
    pipeline(root=args.root, stages=args.stages.split(",") if args.stages else None)


if __name__ == "__main__":
    main()
