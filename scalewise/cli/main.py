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

from scalewise.cli import bench, paper_table, pipeline, restore, sample
from scalewise.core.allocator import keep_freed_memory


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scalewise", description="Scale-wise VAR / SRDD pipeline and tools.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pipeline.add_parsers(sub)
    sample.add_parser(sub)
    restore.add_parser(sub)
    paper_table.add_parser(sub)
    bench.add_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
