"""Prefect flow reproducing the paper tables: every DVC stage the ``report`` stage needs, then the tables.

    python -m flows.paper_table [--root .] [--tables T1,T4] [--run-name NAME]

The same as ``scalewise paper-table``, as a flow: the stages come from DVC (the ancestors of
``report``, in DVC's order) and run one task each (``dvc repro --single-item``, so DVC skips
what is up to date); one MLflow parent run (``paper-table/<flow run>``) holds every stage's
nested run and the table files; the selected tables become a Prefect markdown artifact
(key ``scalewise-paper-tables``). With ``paper_table.experiments`` in params, the missing DVC
experiments are queued and run, and T6 compares them. Returns the table file paths.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.pipeline import _address, _load_params, run_stage, stage_order
from scalewise.project.experiments import check_experiments, publish
from scalewise.evaluation.paper_tables import ALL_TABLES, check_names, select_markdown
from scalewise.project.tracking import git_commit, pipeline_run

ARTIFACT_KEY = "scalewise-paper-tables"
TARGET = "report"
TABLE_FILES = ("reports/paper_tables.md", "reports/paper_tables.csv", "reports/paper_tables.tex",
               "reports/paper_tables")


def stages_for(root: str | Path, target: str = TARGET) -> list[str]:
    """``target`` and every stage it depends on, in DVC's order (names as ``dvc repro`` takes them)."""
    from dvc.repo import Repo

    order = stage_order(root)
    with Repo(str(Path(root).resolve())) as repo:
        graph = repo.index.graph  # edge: stage -> stage it depends on
        root_dir = Path(repo.root_dir)
        by_name = {_address(s, root_dir): s for s in graph.nodes if getattr(s, "cmd", None)}
        if target not in by_name:
            raise ValueError(f"{Path(root) / 'dvc.yaml'} has no stage {target!r}")
        import networkx as nx

        needed = {by_name[target]} | nx.descendants(graph, by_name[target])
        names = {_address(s, root_dir) for s in needed}
    return [s for s in order if s in names]


@flow(name="scalewise-paper-table", persist_result=False)
def paper_table(root: str = ".", tables: list[str] | None = None, run_name: str | None = None) -> list[str]:
    """Run what the tables need, then publish ``tables`` (default all); returns the table file paths."""
    from prefect.runtime import flow_run

    logger = get_run_logger()
    names = check_names(tables or [], ALL_TABLES)
    root_path = Path(root).resolve()
    params = _load_params(root_path)
    experiments = check_experiments((params.get("paper_table") or {}).get("experiments"))
    tracking = params.get("tracking") or {}
    retries = int((params.get("pipeline") or {}).get("retries", 1))
    order = stages_for(root_path)
    logger.info("stages for the paper tables, in DVC order: %s", ", ".join(order))
    with contextlib.chdir(root_path), pipeline_run(
        run_name or f"paper-table/{flow_run.name or 'local'}",
        enabled=bool(tracking.get("enabled", True)),
        experiment=str(tracking.get("experiment", "scalewise")),
        root=root_path,
        tags={"scalewise.orchestrator": "prefect", "scalewise.command": "paper-table",
              "scalewise.prefect_flow_run_id": flow_run.id or ""},
    ) as tracker:
        stage_task = run_stage.with_options(retries=retries)
        for stage in order:  # one at a time: DVC holds a repo lock during each repro
            stage_task(str(root_path), stage)
        markdown = select_markdown((root_path / TABLE_FILES[0]).read_text(), names)
        files = [root_path / rel for rel in TABLE_FILES]
        if experiments and "T6" in names:
            logger.info("DVC experiments for T6 (queued when missing): %s", ", ".join(experiments))
            written = publish(root_path, experiments, {"git commit": git_commit(root_path)})
            markdown += "\n" + select_markdown(written[0].read_text(), ["T6"]).split("\n", 2)[-1]
            files += written
        create_markdown_artifact(markdown=markdown, key=ARTIFACT_KEY,
                                 description=f"paper tables {', '.join(names)} of {root_path}")
        for path in files:
            tracker.log_artifact(path, "paper_tables")
    return [str(p) for p in files]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Reproduce the scalewise paper tables as a Prefect flow.")
    ap.add_argument("--root", default=".", help="project root holding dvc.yaml and params.yaml")
    ap.add_argument("--tables", default=None, help="comma-separated subset of T1..T5 (default: all)")
    ap.add_argument("--run-name", default=None, help="name of the parent MLflow run")
    args = ap.parse_args(argv)
    try:
        tables = check_names(args.tables.split(","), ALL_TABLES) if args.tables else None
        for path in paper_table(root=args.root, tables=tables, run_name=args.run_name):
            print(path)
    except Exception as exc:  # Prefect has logged the traceback; end with one clear line
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
