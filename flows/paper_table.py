"""Prefect flow reproducing the paper tables: every DVC stage ``report`` and ``report_studies`` need, then the tables.

    python -m flows.paper_table [--root .] [--tables T1,T4] [--run-name NAME]

The same as ``scalewise paper-table``, as a flow: the stages come from DVC (the ancestors of
``report`` and, for the studies and seeds, ``paper/dvc.yaml:report_studies``, in DVC's order)
and run one task each (``dvc repro --single-item``, so DVC skips what is up to date); one MLflow
parent run (``paper-table/<flow run>``) holds every stage's nested run and the table files; the
selected tables become a Prefect markdown artifact (key ``scalewise-paper-tables``). With
``paper_table.experiments`` in params, the missing DVC experiments are queued and run, and T6
compares them; with ``paper_table.seeds``, the seed experiments likewise (T9, T9b). Returns the
table file paths.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.pipeline import flow_parser, one_line_errors, run_stage, stages_for
from scalewise.evaluation.paper_tables import ALL_TABLES, check_names
from scalewise.project.entry import pipeline_tracked
from scalewise.project.experiments import check_experiments
from scalewise.project.seeds import seed_settings
from scalewise.project.paper_table import collect_tables, repro_targets
from scalewise.project.params import PARAMS_FILE, load_params

ARTIFACT_KEY = "scalewise-paper-tables"


@flow(name="scalewise-paper-table", persist_result=False)
def paper_table(root: str = ".", tables: list[str] | None = None, run_name: str | None = None) -> list[str]:
    """Run what the tables need, then publish ``tables`` (default all); returns the table file paths."""
    from prefect.runtime import flow_run

    logger = get_run_logger()
    names = check_names(tables or [], ALL_TABLES)
    root_path = Path(root).resolve()
    params = load_params(root_path / PARAMS_FILE)
    experiments = check_experiments((params.get("paper_table") or {}).get("experiments"))
    seeds = seed_settings(params)
    retries = int((params.get("pipeline") or {}).get("retries", 1))
    order = stages_for(root_path, repro_targets(names))
    logger.info("stages for the paper tables, in DVC order: %s", ", ".join(order))
    with contextlib.chdir(root_path), pipeline_tracked(
        run_name or f"paper-table/{flow_run.name or 'local'}", params, root=root_path,
        tags={"scalewise.orchestrator": "prefect", "scalewise.command": "paper-table",
              "scalewise.prefect_flow_run_id": flow_run.id or ""},
    ) as tracker:
        stage_task = run_stage.with_options(retries=retries)
        for stage in order:  # one at a time: DVC holds a repo lock during each repro
            stage_task(str(root_path), stage)
        if experiments and "T6" in names:
            logger.info("DVC experiments for T6 (queued when missing): %s", ", ".join(experiments))
        if seeds is not None and len(seeds.seeds) > 1 and any(n.startswith("T9") for n in names):
            logger.info("training seeds for T9 (DVC experiments, queued when missing): %s",
                        ", ".join(seeds.experiments()))
        markdown, files = collect_tables(root_path, names, experiments, seeds=seeds)
        create_markdown_artifact(markdown=markdown, key=ARTIFACT_KEY,
                                 description=f"paper tables {', '.join(names)} of {root_path}")
        tracker.log_artifacts(files, "paper_tables")
    return [str(p) for p in files]


def main(argv: list[str] | None = None) -> None:
    ap = flow_parser("Reproduce the scalewise paper tables as a Prefect flow.")
    ap.add_argument("--tables", default=None, help="comma-separated subset of T1..T9b (default: all)")
    args = ap.parse_args(argv)
    with one_line_errors():
        tables = check_names(args.tables.split(","), ALL_TABLES) if args.tables else None
        for path in paper_table(root=args.root, tables=tables, run_name=args.run_name):
            print(path)


if __name__ == "__main__":
    main()
