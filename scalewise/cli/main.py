"""The ``scalewise`` command line.

    scalewise repro [DVC ARGS]   run ``dvc repro`` inside one MLflow pipeline run
    scalewise stage NAME [ARGS]  run one stage outside DVC (debugging)
    scalewise stages             list the pipeline's stages in DVC order
    scalewise sample ...         checkpoint -> PNG grid or folder of PNGs
    scalewise restore ...        restore your own image (inpaint, outpaint, superres, deblur)
    scalewise bench sample|train|restore  speed / memory benchmark, JSON out
    scalewise paper-table [--tables T1,T4]  run what is missing, print the paper tables
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

from scalewise.cli import bench, paper_table, pipeline, restore, sample
from scalewise.cli.args import HelpFormatter
from scalewise.core.allocator import keep_freed_memory


def _version() -> str:
    try:
        return version("scalewise")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scalewise", description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--version", action="version", version=f"scalewise {_version()}",
                    help="print the version and exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pipeline.add_parsers(sub)
    sample.add_parser(sub)
    restore.add_parser(sub)
    paper_table.add_parser(sub)
    bench.add_parser(sub)
    return ap


def parse(argv: list[str]) -> argparse.Namespace:
    """The command's arguments; ``repro`` and ``stage NAME`` pass every later word on untouched
    (argparse would take ``--force`` or ``--help`` there as its own)."""
    if argv[:1] == ["repro"] and argv[1:2] not in (["-h"], ["--help"]):
        return argparse.Namespace(command="repro", func=pipeline.cmd_repro, rest=argv[1:])
    if argv[:1] == ["stage"] and len(argv) > 1 and not argv[1].startswith("-"):
        return argparse.Namespace(command="stage", func=pipeline.cmd_stage, name=argv[1], rest=argv[2:])
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
