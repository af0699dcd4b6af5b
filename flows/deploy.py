"""Deployments of the pipeline flow: a scheduled one served locally, and a work-pool one.

    python -m flows.deploy serve       # serve `scalewise-pipeline` on params.yaml: pipeline.cron
    python -m flows.deploy work-pool   # register `scalewise-pipeline-remote` on pipeline.work_pool

Schedules fire only against a running Prefect server::

    prefect server start &
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.deploy serve

For remote runs, create the pool, register the deployment and start a worker where the
project (and its venv) lives::

    prefect work-pool create scalewise --type process
    python -m flows.deploy work-pool
    prefect worker start --pool scalewise
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from scalewise.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NAME = "scalewise-pipeline"
ENTRYPOINT = "flows/pipeline.py:pipeline"


def deployment_settings(params: dict[str, Any], root: Path) -> dict[str, Any]:
    """Name, cron, work pool and flow parameters of the deployments, from ``params['pipeline']``.

    Raises:
        ConfigError: ``pipeline.cron`` is not a cron string Prefect accepts, or
            ``pipeline.work_pool`` is empty.
    """
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    section = params.get("pipeline") or {}
    cron = str(section.get("cron", "0 3 * * *"))
    try:
        CronSchedule(cron=cron)  # the validator Prefect's API applies
    except ValidationError as exc:
        reason = str(exc.errors()[0].get("msg", exc)).removeprefix("Value error, ")
        raise ConfigError(
            f"params.yaml: pipeline.cron={cron!r} is not a valid cron string ({reason}); "
            "expected 5 fields 'minute hour day-of-month month day-of-week', e.g. '0 3 * * *'"
        ) from exc
    work_pool = str(section.get("work_pool") or "").strip()
    if not work_pool:
        raise ConfigError("params.yaml: pipeline.work_pool must name a Prefect work pool, e.g. 'scalewise'")
    return {
        "name": NAME,
        "cron": cron,
        "work_pool": work_pool,
        "parameters": {"root": str(Path(root).resolve())},
    }


def _api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url  # PREFECT_API_URL from the env or the active profile


_NO_SERVER = ("start one with `prefect server start` and set "
              "`PREFECT_API_URL=http://127.0.0.1:4200/api` (or `prefect config set PREFECT_API_URL=...`)")


def serve(settings: dict[str, Any]) -> None:
    """Serve the flow on the cron schedule in this process (runs until interrupted)."""
    from flows.pipeline import pipeline

    if not _api_url():
        print(f"warning: no PREFECT_API_URL: scheduled runs fire only with a Prefect server; {_NO_SERVER}",
              file=sys.stderr)
    pipeline.serve(name=settings["name"], cron=settings["cron"], parameters=settings["parameters"])


def deploy_to_work_pool(settings: dict[str, Any], source: Path = ROOT) -> None:
    """Register the work-pool deployment; the worker loads the flow's code from ``source``."""
    from flows.pipeline import pipeline

    if not _api_url():
        raise SystemExit(f"error: a work-pool deployment needs a Prefect server: {_NO_SERVER}")
    remote = pipeline.from_source(source=str(source), entrypoint=ENTRYPOINT)
    try:
        remote.deploy(name=f"{settings['name']}-remote", work_pool_name=settings["work_pool"],
                      cron=settings["cron"], parameters=settings["parameters"],
                      ignore_warnings=True)  # a process pool is meant: the worker runs the venv
    except ValueError as exc:
        if "Could not find work pool" not in str(exc):
            raise
        raise SystemExit(f"error: {exc} (params.yaml: pipeline.work_pool): "
                         f"`prefect work-pool create {settings['work_pool']} --type process`") from exc


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["serve", "work-pool"])
    ap.add_argument("--root", default=str(ROOT), help="project root holding params.yaml (default: this checkout)")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    try:
        settings = deployment_settings(yaml.safe_load((root / "params.yaml").read_text()) or {}, root)
    except (ConfigError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    if args.mode == "serve":
        serve(settings)
    else:
        deploy_to_work_pool(settings)


if __name__ == "__main__":
    main()
