"""``scalewise repro | stage | stages``: the DVC pipeline from the command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from scalewise.cli.args import HelpFormatter
from scalewise.project.env import venv_env
from scalewise.project.params import load_params


def cmd_stage(args: argparse.Namespace) -> int:
    module = Path("stages") / f"{args.name}.py"
    if not module.is_file():
        available = sorted(p.stem for p in Path("stages").glob("[!_]*.py"))
        print(f"error: unknown stage '{args.name}' (no {module}); available: {available}", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", f"stages.{args.name}", *args.rest], env=venv_env())


def cmd_repro(args: argparse.Namespace) -> int:
    from scalewise.project.entry import pipeline_tracked

    with pipeline_tracked("pipeline", load_params(missing_ok=True)) as tracker:
        rc = subprocess.call([sys.executable, "-m", "dvc", "repro", *args.rest], env=venv_env())
        if rc != 0:
            raise SystemExit(rc)
        metrics = Path("metrics")
        if metrics.is_dir():
            tracker.log_artifact(metrics, "metrics")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from dvc.repo import Repo

    with Repo(".") as repo:
        for stage in repo.index.stages:
            print(stage.addressing)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("repro", help="run `dvc repro` (extra args passed on) inside one MLflow pipeline run",
                       formatter_class=HelpFormatter)
    p.add_argument("rest", nargs=argparse.REMAINDER,
                   help="targets and flags of `dvc repro` (e.g. -f, --dry, train@var)")
    p.set_defaults(func=cmd_repro)
    p = sub.add_parser("stage", help="run one stage outside DVC, e.g. `scalewise stage train_tokenizer`",
                       formatter_class=HelpFormatter)
    p.add_argument("name", help="stage module name under stages/ (prepare, train_tokenizer, ...)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the stage")
    p.set_defaults(func=cmd_stage)
    p = sub.add_parser("stages", help="list the pipeline's stages as DVC defines them", formatter_class=HelpFormatter)
    p.set_defaults(func=cmd_stages)
