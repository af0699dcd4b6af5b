"""DVC stage ``reconstruct_summary``: gather every ``reconstruct@<variant>-<task>`` result.

Writes ``metrics/reconstruct.json`` shaped ``{variant: {task: {method: {psnr, ssim,
consistency, sec_per_image}}}}`` and ``reports/reconstruct_summary.md`` (one table per
variant), and logs both to MLflow.

    python -m stages.reconstruct_summary [--metrics metrics/reconstruct]
"""

from __future__ import annotations

import json
from pathlib import Path

from scalewise.core.io import write_json, write_text
from scalewise.project.entry import load_params, run_main, tracked, stage_parser

COLUMNS = ("psnr", "ssim", "consistency", "sec_per_image")


def gather(folder: Path) -> dict:
    """``{variant: {task: {method: metrics}}}`` from ``folder/<variant>/<task>.json``."""
    out: dict = {}
    for path in sorted(folder.glob("*/*.json")):
        out.setdefault(path.parent.name, {})[path.stem] = json.loads(path.read_text())
    if not out:
        raise FileNotFoundError(f"{folder}: no reconstruct results (run `dvc repro reconstruct`)")
    return out


def markdown(results: dict) -> str:
    lines = ["# Inverse problems", ""]
    for variant, tasks in results.items():
        lines += [f"## {variant}", "", "| task | method | PSNR (dB) | SSIM | consistency | s/img |", "|---|---|---|---|---|---|"]
        for task, methods in tasks.items():
            for method, m in methods.items():
                lines.append(f"| {task} | {method} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['consistency']:.3f} | "
                             f"{m['sec_per_image']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--metrics", default="metrics/reconstruct")
    args = ap.parse_args()
    params = load_params(args.params)
    results = gather(Path(args.metrics))
    with tracked("reconstruct_summary", params, {}) as tracker:
        path = write_json("metrics/reconstruct.json", results)
        table = write_text("reports/reconstruct_summary.md", markdown(results))
        tracker.log_metrics({f"{v}/{t}/{m.replace('+', '_')}/{k}": float(vals[k]) for v, ts in results.items() for t, ms in ts.items()
                             for m, vals in ms.items() for k in COLUMNS if k in vals})
        tracker.log_artifact(path)
        tracker.log_artifact(table)
    print(f"reconstruct_summary: {sum(len(t) for t in results.values())} variant x task results -> {path}")


if __name__ == "__main__":
    run_main(main)
