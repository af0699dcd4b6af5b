"""The ``scalewise`` command line.

    scalewise repro [DVC ARGS]   run ``dvc repro`` inside one MLflow pipeline run
    scalewise stage NAME [ARGS]  run one stage outside DVC (debugging)
    scalewise stages             list the pipeline's stages in DVC order
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path



def _venv_env() -> dict[str, str]:
    """The environment with this interpreter's bin folder first on PATH (so ``python3`` is ours)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def cmd_stage(args: argparse.Namespace) -> int:
    module = Path("stages") / f"{args.name}.py"
    if not module.is_file():
        available = sorted(p.stem for p in Path("stages").glob("[!_]*.py"))
        print(f"error: unknown stage '{args.name}' (no {module}); available: {available}", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", f"stages.{args.name}", *args.rest], env=_venv_env())


def cmd_repro(args: argparse.Namespace) -> int:
    import yaml

    from scalewise.tracking import pipeline_run

    params = yaml.safe_load(Path("params.yaml").read_text()) if Path("params.yaml").is_file() else {}
    tracking = (params or {}).get("tracking", {}) or {}
    with pipeline_run(
        "pipeline", enabled=bool(tracking.get("enabled", True)),
        experiment=str(tracking.get("experiment", "scalewise")),
    ) as tracker:
        rc = subprocess.call([sys.executable, "-m", "dvc", "repro", *args.rest], env=_venv_env())
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scalewise", description="Scale-wise VAR / SRDD pipeline and tools.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("repro", help="run `dvc repro` (extra args passed on) inside one MLflow pipeline run")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_repro)
    p = sub.add_parser("stage", help="run one stage outside DVC, e.g. `scalewise stage train_vqvae`")
    p.add_argument("name", help="stage module name under stages/ (prepare, train_vqvae, ...)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the stage")
    p.set_defaults(func=cmd_stage)
    p = sub.add_parser("stages", help="list the pipeline's stages as DVC defines them")
    p.set_defaults(func=cmd_stages)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
