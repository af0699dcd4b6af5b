"""Deployments of the pipeline and paper-table flows: scheduled ones served locally, and work-pool ones.

    python -m flows.deploy serve       # serve `scalewise-pipeline` (cron: params.yaml pipeline.cron)
                                       # and `scalewise-paper-table` (cron: paper_table.cron)
    python -m flows.deploy work-pool   # register both as `<name>-remote` on pipeline.work_pool

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

from scalewise.core.config import ConfigError
from scalewise.project.params import PARAMS_FILE, load_params

ROOT = Path(__file__).resolve().parents[1]
FLOWS = {  # params section of the cron -> (deployment name, entrypoint, default cron)
    "pipeline": ("scalewise-pipeline", "flows/pipeline.py:pipeline", "0 3 * * *"),
    "paper_table": ("scalewise-paper-table", "flows/paper_table.py:paper_table", "0 4 * * 0"),
}
NAME, ENTRYPOINT, _ = FLOWS["pipeline"]


def deployment_settings(params: dict[str, Any], root: Path, flow: str = "pipeline") -> dict[str, Any]:
    """Name, cron, work pool and flow parameters of ``flow``'s deployments.

    The cron comes from ``params[flow]['cron']`` (``pipeline`` or ``paper_table``), the work
    pool from ``params['pipeline']['work_pool']``.

    Raises:
        ConfigError: the cron is not a cron string Prefect accepts, or
            ``pipeline.work_pool`` is empty.
    """
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    if flow not in FLOWS:
        raise ConfigError(f"unknown flow {flow!r}; allowed: {list(FLOWS)}")
    name, entrypoint, default_cron = FLOWS[flow]
    cron = str((params.get(flow) or {}).get("cron", default_cron))
    try:
        CronSchedule(cron=cron)  # the validator Prefect's API applies
    except ValidationError as exc:
        reason = str(exc.errors()[0].get("msg", exc)).removeprefix("Value error, ")
        raise ConfigError(
            f"params.yaml: {flow}.cron={cron!r} is not a valid cron string ({reason}); "
            "expected 5 fields 'minute hour day-of-month month day-of-week', e.g. '0 3 * * *'"
        ) from exc
    work_pool = str((params.get("pipeline") or {}).get("work_pool") or "").strip()
    if not work_pool:
        raise ConfigError("params.yaml: pipeline.work_pool must name a Prefect work pool, e.g. 'scalewise'")
    return {
        "name": name,
        "cron": cron,
        "work_pool": work_pool,
        "parameters": {"root": str(Path(root).resolve())},
        "entrypoint": entrypoint,
    }


def _api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url  # PREFECT_API_URL from the env or the active profile


_NO_SERVER = ("start one with `prefect server start` and set "
              "`PREFECT_API_URL=http://127.0.0.1:4200/api` (or `prefect config set PREFECT_API_URL=...`)")


def _flow(settings: dict[str, Any]):
    if settings["entrypoint"] == FLOWS["paper_table"][1]:
        from flows.paper_table import paper_table

        return paper_table
    from flows.pipeline import pipeline

    return pipeline


def serve(all_settings: list[dict[str, Any]]) -> None:
    """Serve the flows on their cron schedules in this process (runs until interrupted)."""
    from prefect import serve as prefect_serve

    if not _api_url():
        print(f"warning: no PREFECT_API_URL: scheduled runs fire only with a Prefect server; {_NO_SERVER}",
              file=sys.stderr)
    prefect_serve(*[_flow(s).to_deployment(name=s["name"], cron=s["cron"], parameters=s["parameters"])
                    for s in all_settings])


def deploy_to_work_pool(settings: dict[str, Any], source: Path = ROOT) -> None:
    """Register one flow's work-pool deployment; the worker loads the flow's code from ``source``."""
    if not _api_url():
        raise SystemExit(f"error: a work-pool deployment needs a Prefect server: {_NO_SERVER}")
    remote = _flow(settings).from_source(source=str(source), entrypoint=settings["entrypoint"])
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
    ap.add_argument("--flows", default="pipeline,paper_table", help=f"comma-separated subset of {list(FLOWS)}")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    try:
        params = load_params(root / PARAMS_FILE)
        all_settings = [deployment_settings(params, root, f.strip()) for f in args.flows.split(",") if f.strip()]
    except (ConfigError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    if args.mode == "serve":
        serve(all_settings)
    else:
        for settings in all_settings:
            deploy_to_work_pool(settings)


if __name__ == "__main__":
    main()
