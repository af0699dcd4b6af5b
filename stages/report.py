"""DVC stage ``report``: the paper tables from the pipeline's metrics.

Gathers ``metrics/evaluate/<model>.json`` into ``metrics/evaluate.json`` (``{model: {setting:
{fid, isc, kid, precision, recall, images_per_s, peak_memory_bytes, extractor, ...}}}``), reads
``metrics/evaluate_reconstruct.json``, and writes ``reports/paper_tables.md``, ``.csv`` and
``.tex`` (T1..T5, see :mod:`scalewise.evaluation.paper_tables`) and the sweep plots
``reports/paper_tables/t2_masked_sweep.png`` and ``t3_cfg_sweep.png``; all logged to MLflow.

    python -m stages.report
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scalewise.core.io import atomic_path, write_json, write_text
from scalewise.evaluation.paper_tables import (
    T1_ROWS, TABLE_FILES, TABLE_PLOTS, TABLES, Table, build_tables, to_csv, to_latex, to_markdown,
)
from scalewise.project.tracking import git_commit
from scalewise.project.entry import load_params, run_main, section, tracked, stage_parser

OUT = Path(TABLE_PLOTS)


def gather(folder: Path) -> dict:
    """``{model: {setting: metrics}}`` from ``folder/<model>.json``."""
    out = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    if not out:
        raise FileNotFoundError(f"{folder}: no evaluation results (run `dvc repro evaluate`)")
    return out


def context(params: dict, evaluate: dict, manifest: dict, evaluator: dict | None) -> dict[str, Any]:
    """What every table states: dataset, image size, extractor, sample counts, seeds, git commit."""
    ev = params.get("evaluate", {})
    extractors = sorted({r.get("extractor", "?") for settings in evaluate.values() for r in settings.values()})
    classes = manifest.get("num_classes", 0)
    n_test = sum(manifest.get("counts", {}).get("test", {}).values())
    extractor = ", ".join(extractors)
    if evaluator and "scalewise-evaluator" in extractors:
        extractor += f" (domain classifier, test accuracy {evaluator['test_acc']:.4f})"
    sweeps = ev.get("sweeps", {}) or {}
    return {
        "dataset": f"{manifest.get('source')} ({classes} classes, hash {str(manifest.get('content_hash'))[:12]})",
        "image size": f"{manifest.get('image_size')} px, {manifest.get('channels')} channel(s)",
        "extractor": extractor,
        "samples": f"{ev.get('samples_per_class')} per class ({ev.get('samples_per_class', 0) * classes} per "
                   f"setting; sweeps {sweeps.get('samples_per_class')} per class) vs {n_test} test images",
        "seeds": f"evaluate {ev.get('seed')}, train {params.get('train', {}).get('common', {}).get('seed')}, "
                 f"tokenizer {params.get('train_tokenizer', {}).get('seed')}",
        "git commit": git_commit("."),
    }


def plot_sweeps(tables: dict[str, Table], out: Path) -> list[Path]:
    """FID (and IS) along the T2 / T3 sweeps as PNG line plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "T2" in tables:
        t = tables["T2"]
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        for thr in sorted({r[0] for r in t.rows}):
            pts = sorted((r[1], r[2]) for r in t.rows if r[0] == thr)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"threshold {thr:g}")
        ax.set_xlabel("masked-resampling iterations")
        ax.set_ylabel("FID")
        ax.set_title(t.title, fontsize=9)
        ax.legend(fontsize=7)
        written.append(_save(fig, out / "t2_masked_sweep.png"))
    if "T3" in tables:
        t = tables["T3"]
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.plot([r[0] for r in t.rows], [r[2] for r in t.rows], marker="o", color="C0")
        ax.set_xlabel("cfg")
        ax.set_ylabel("FID", color="C0")
        ax2 = ax.twinx()
        ax2.plot([r[0] for r in t.rows], [r[3] for r in t.rows], marker="s", color="C1")
        ax2.set_ylabel("IS", color="C1")
        ax.set_title(t.title, fontsize=9)
        written.append(_save(fig, out / "t3_cfg_sweep.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    ap = stage_parser(__doc__)
    args = ap.parse_args()
    params = load_params(args.params)
    sweep_models = (section(params, "evaluate", args.params).get("sweeps") or {}).get("models") or ["srdd"]
    evaluate = gather(Path("metrics/evaluate"))
    recon_path = Path("metrics/evaluate_reconstruct.json")
    if not recon_path.is_file():
        raise FileNotFoundError(f"{recon_path}: missing (run `dvc repro evaluate_reconstruct`)")
    recon = json.loads(recon_path.read_text())
    manifest = json.loads((Path(args.data) / "manifest.json").read_text())
    ev_path = Path("metrics/train_evaluator.json")
    evaluator = json.loads(ev_path.read_text()) if ev_path.is_file() else None
    ctx = context(params, evaluate, manifest, evaluator)
    tables = build_tables(list(TABLES), evaluate, recon, ctx, sweep_model=sweep_models[0])
    with tracked("report", params, {}) as tracker:
        metrics = write_json("metrics/evaluate.json", evaluate)
        texts = (to_markdown(tables), to_csv(tables), to_latex(tables))
        files = [write_text(path, text) for path, text in zip(TABLE_FILES, texts)]
        files += plot_sweeps({t.key: t for t in tables}, OUT)
        tracker.set_tags({"scalewise.tables": ",".join(t.key for t in tables)})
        keys = ("fid", "isc", "kid", "precision", "recall", "images_per_s", "peak_memory_bytes", "steps")
        for _, model, setting in T1_ROWS:  # T1 as metrics: compare runs side by side in the MLflow UI
            r = evaluate[model][setting]
            tracker.log_metrics({f"t1/{model}/{setting.replace('+', '_')}/{k}": float(r[k]) for k in keys})
        tracker.log_artifacts([metrics, *files], "paper_tables")
    print(f"report: {len(tables)} tables -> reports/paper_tables.md/.csv/.tex")


if __name__ == "__main__":
    run_main(main)
