"""Deployments of the pipeline flow: a scheduled one served locally, and a work-pool one.

    python -m flows.deploy serve       # serve `scalewise-pipeline` on the cron in params.yaml
    python -m flows.deploy work-pool   # register `scalewise-pipeline-remote` on a work pool

Schedules fire only against a running Prefect server::

    prefect server start &
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.deploy serve

For remote runs, register the work-pool deployment and start a worker where it should run:
``prefect work-pool create scalewise --type process`` then ``prefect worker start --pool scalewise``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml

from scalewise.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def deployment_settings(params: dict[str, Any], root: Path) -> dict[str, Any]:
    """Name, cron, work pool and flow parameters of the deployments, from ``params['pipeline']``."""
    from prefect.client.schemas.schedules import CronSchedule

    section = params.get("pipeline") or {}
    cron = str(section.get("cron", "0 3 * * *"))
    try:
        CronSchedule(cron=cron)
    except Exception as exc:
        raise ConfigError(f"params.yaml: pipeline.cron={cron!r} is not a valid cron string: {exc}") from exc
    return {
        "name": "scalewise-pipeline",
        "cron": cron,
        "work_pool": str(section.get("work_pool", "scalewise")),
        "parameters": {"root": str(Path(root).resolve())},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["serve", "work-pool"])
    ap.add_argument("--root", default=str(ROOT))
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    settings = deployment_settings(yaml.safe_load((root / "params.yaml").read_text()) or {}, root)
    from flows.pipeline import pipeline

    if args.mode == "serve":
        pipeline.serve(name=settings["name"], cron=settings["cron"], parameters=settings["parameters"])
        return
    if not os.environ.get("PREFECT_API_URL"):
        raise SystemExit(
            "error: a work-pool deployment needs a Prefect server: run `prefect server start` and "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`, then retry"
        )
    pipeline.from_source(source=str(root), entrypoint="flows/pipeline.py:pipeline").deploy(
        name=f"{settings['name']}-remote", work_pool_name=settings["work_pool"], cron=settings["cron"],
        parameters=settings["parameters"],
    )


if __name__ == "__main__":
    main()
