"""``scalewise paper-table``: bring the pipeline up to date and show the paper tables.

    scalewise paper-table [--tables T1,T4] [--no-repro] [--out DIR]

Runs ``dvc repro report paper/dvc.yaml:report_studies`` (DVC runs only what is missing or stale:
the main pipeline of ``make repro``, then the studies of ``paper/dvc.yaml``: the posterior and
distillation frontiers) inside one MLflow parent run named ``paper-table``, then prints the
requested tables from ``reports/paper_tables.md`` and ``reports/paper_studies.md`` and logs the
table files to that run. With ``paper_table.experiments`` in params (name -> ``-S`` overrides of
training settings), the experiments DVC does not have yet are queued (``dvc exp run --queue``)
and run, and table T6 compares them (``reports/paper_experiments.*``). With
``paper_table.seeds``, every training seed but the workspace's is such an experiment
(``seed<s>``), and T9 / T9b give mean ± std and the claims' spread (``reports/paper_seeds.*``).
``flows/paper_table.py`` does the same as a Prefect flow."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from scalewise.cli.args import HelpFormatter


def cmd_paper_table(args: argparse.Namespace) -> int:
    from scalewise.evaluation.paper_tables import ALL_TABLES, check_names
    from scalewise.project.entry import pipeline_tracked
    from scalewise.project.env import venv_env
    from scalewise.project.experiments import check_experiments
    from scalewise.project.paper_table import collect_tables, repro_targets
    from scalewise.project.params import load_params
    from scalewise.project.seeds import seed_settings

    names = check_names(args.tables.split(","), ALL_TABLES) if args.tables else list(ALL_TABLES)  # fail early
    params = load_params(missing_ok=True)
    experiments = check_experiments((params.get("paper_table") or {}).get("experiments"))
    seeds = seed_settings(params)
    with pipeline_tracked("paper-table", params, tags={"scalewise.command": "paper-table"}) as tracker:
        if not args.no_repro:
            targets = repro_targets(names)
            rc = subprocess.call([sys.executable, "-m", "dvc", "repro", *targets], env=venv_env())
            if rc != 0:
                print(f"error: dvc repro {' '.join(targets)} failed (exit {rc})", file=sys.stderr)
                return rc
        text, files = collect_tables(".", names, experiments, run_experiments=not args.no_repro, seeds=seeds)
        tracker.log_artifacts(files, "paper_tables")
        if args.out:
            from scalewise.core.io import write_text

            out = Path(args.out)
            write_text(out / "paper_tables.md", text)
            print(f"wrote {out / 'paper_tables.md'}", file=sys.stderr)
    print(text)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("paper-table", help="run what is missing (dvc repro report) and print the paper tables",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--tables", default=None, help="comma-separated subset of T1..T9b (default: all; T6 needs paper_table.experiments, "
                   "T9 / T9b paper_table.seeds)")
    p.add_argument("--no-repro", action="store_true", help="only show the tables of the last pipeline run")
    p.add_argument("--out", default=None, help="also write the selected tables (markdown) to this folder")
    p.set_defaults(func=cmd_paper_table)
