"""DVC stages ``report`` (dvc.yaml) and ``report_studies`` (paper/dvc.yaml): the paper tables.

``report`` gathers ``metrics/evaluate/<model>.json`` into ``metrics/evaluate.json`` (``{model:
{setting: {fid, isc, kid, precision, recall, images_per_s, peak_memory_bytes, extractor, ...}}}``),
reads ``metrics/evaluate_reconstruct.json`` and ``data/degraded/manifest.json`` (T4's test-image
counts and noise), and writes ``reports/paper_tables.md``, ``.csv`` and ``.tex`` (T1-T5, T7, see
:mod:`scalewise.evaluation.paper_tables`) with the plots ``reports/paper_tables/t2_masked_sweep.png``,
``t3_cfg_sweep.png`` and ``t7_fid_vs_time.png``. The learned heads' modes
(``metrics/evaluate_heads.json``) join their model's settings, and ``metrics/train_heads.json``
gives T7 the heads' size and test losses.

``report --studies`` is ``report_studies``: the studies ``scalewise paper-table`` adds to
``make repro``'s pipeline. It reads ``metrics/posterior_frontier.json``,
``metrics/restore_cost.json`` and ``metrics/distill_frontier.json`` and writes ``reports/paper_studies.md``, ``.csv``, ``.tex``
(T4b-T4d, T8) with ``reports/paper_studies/t4b_posterior_frontier.png`` and
``t8_distill_frontier.png``. Both log their files to MLflow.

    python -m stages.report [--degraded data/degraded] [--studies]
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from scalewise.core.io import atomic_path, write_json, write_text
from scalewise.evaluation.paper_tables import (
    FRONTIER_FILE, STUDY_FILES, STUDY_PLOTS, STUDY_TABLES, T1_ROWS, TABLE_FILES, TABLE_PLOTS, TABLES, MissingResult,
    Table, build_tables, inverse_notes, to_csv, to_latex, to_markdown,
)
from scalewise.core.config import flatten
from scalewise.evaluation.headline import headline
from scalewise.project.tracking import Tracker, git_commit
from scalewise.project.entry import load_params, run_main, section, tracked, stage_parser

HEADLINE_FILE = "metrics/headline.json"  # the DVC metrics of `dvc metrics show` (the rest are plain outputs)


def gather(folder: Path) -> dict:
    """``{model: {setting: metrics}}`` from ``folder/<model>.json``."""
    out = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    if not out:
        raise FileNotFoundError(f"{folder}: no evaluation results (run `dvc repro evaluate`)")
    return out


def _num_test(manifest: dict) -> int:
    return sum(manifest.get("counts", {}).get("test", {}).values())


def context(params: dict, evaluate: dict, manifest: dict, evaluator: dict | None) -> dict[str, Any]:
    """What every table states: dataset, image size, extractor, seeds, git commit."""
    ev = params.get("evaluate", {})
    extractors = sorted({r.get("extractor", "?") for settings in evaluate.values() for r in settings.values()})
    classes = manifest.get("num_classes", 0)
    extractor = ", ".join(extractors)
    if evaluator and "scalewise-evaluator" in extractors:
        extractor += f" (domain classifier, test accuracy {evaluator['test_acc']:.4f})"
    return {
        "dataset": f"{manifest.get('source')} ({classes} classes, hash {str(manifest.get('content_hash'))[:12]})",
        "image size": f"{manifest.get('image_size')} px, {manifest.get('channels')} channel(s)",
        "extractor": extractor,
        "seeds": f"evaluate {ev.get('seed')}, train {params.get('train', {}).get('common', {}).get('seed')}, "
                 f"tokenizer {params.get('train_tokenizer', {}).get('seed')}",
        "git commit": git_commit("."),
    }


def table_notes(params: dict, manifest: dict, degraded: dict) -> dict[str, dict[str, Any]]:
    """Each table's own notes: sample counts for the generation tables, test images and noise for T4 / T4b."""
    ev = params.get("evaluate", {})
    classes = manifest.get("num_classes", 0)
    sweeps = ev.get("sweeps", {}) or {}
    samples = {"samples": f"{ev.get('samples_per_class')} per class ({ev.get('samples_per_class', 0) * classes} "
                          f"per setting; sweeps {sweeps.get('samples_per_class')} per class) vs "
                          f"{_num_test(manifest)} test images"}
    inverse = inverse_notes(degraded, _num_test(manifest))
    frontier = dict(inverse)
    n_front = (params.get("posterior_frontier") or {}).get("num_images")
    if n_front:
        frontier["frontier images"] = (f"the first {n_front} of each task's test images; point n<N>_s<S>: N particles, "
                                       "S steps per guided scale, the rest from reconstruct.guidance; other points are "
                                       "posterior_frontier.variants and the clamp baseline; times after a warm-up batch")
    return {"T1": samples, "T2": samples, "T3": samples, "T5": samples, "T4": inverse, "T4b": frontier,
            "T4c": inverse, "T4d": frontier, "T7": samples,
            "T8": {"samples": f"{(params.get('distill_frontier') or {}).get('samples_per_class')} per class "
                              f"vs {_num_test(manifest)} test images"}}


def plot_sweeps(tables: dict[str, Table], out: Path) -> list[Path]:
    """FID (and IS) along the T2 / T3 sweeps and T4b's PSNR-vs-seconds frontier as PNG line plots."""
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
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8.0, 3.2))
        for i, model in enumerate(dict.fromkeys(r[0] for r in t.rows)):
            rows = [r for r in t.rows if r[0] == model]
            ax.plot([r[1] for r in rows], [r[3] for r in rows], marker="o", color=f"C{i}", label=model)
            ax2.plot([r[1] for r in rows], [r[4] for r in rows], marker="s", color=f"C{i}", label=model)
        ax.set_xlabel("cfg")
        ax.set_ylabel("FID")
        ax2.set_xlabel("cfg")
        ax2.set_ylabel("IS")
        ax.legend(fontsize=7)
        fig.suptitle(t.title, fontsize=9)
        written.append(_save(fig, out / "t3_cfg_sweep.png"))
    if "T4b" in tables:
        written.append(_plot_frontier(tables["T4b"], out / "t4b_posterior_frontier.png"))
    if "T7" in tables and "T2" in tables:
        written.append(_plot_heads(tables["T2"], tables["T7"], out / "t7_fid_vs_time.png"))
    if "T8" in tables:
        t = tables["T8"]
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.plot([r[6] for r in t.rows], [r[3] for r in t.rows], marker="o")
        for r in t.rows:
            ax.annotate(f"{r[0]}{' (default)' if r[8] else ''}", (r[6], r[3]), fontsize=7)
        ax.set_xlabel("sampling speed-up vs teacher")
        ax.set_ylabel("FID")
        ax.set_title(t.title, fontsize=9)
        written.append(_save(fig, out / "t8_distill_frontier.png"))
    return written


def _plot_heads(t2: Table, t7: Table, path: Path) -> Path:
    """FID against milliseconds per image: the fixed masked-resampling sweep (T2, its own smaller
    sample count, so its FIDs sit higher) as lines, T7's full-count settings as markers."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for thr in sorted({r[0] for r in t2.rows}):
        pts = sorted((1000 / r[7], r[2]) for r in t2.rows if r[0] == thr)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", alpha=0.6, label=f"fixed MR t={thr:g} (sweep)")
    for i, r in enumerate(t7.rows):
        ax.plot([1000 / r[7]], [r[2]], marker="*", markersize=10, linestyle="none", color=f"C{(i + 3) % 10}",
                label=r[0])
    ax.set_xlabel("ms per image")
    ax.set_ylabel("FID")
    ax.set_title(t7.title, fontsize=8)
    ax.legend(fontsize=6)
    return _save(fig, path)


def _plot_frontier(t: Table, path: Path) -> Path:
    """Mean-particle PSNR against seconds per image, one panel per task, one line per model (grid points
    by cost; named variants such as masked resampling, the fast preset and the clamp baseline as single
    markers)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    tasks = list(dict.fromkeys(r[0] for r in t.rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for model in dict.fromkeys(r[1] for r in t.rows if r[0] == task):
            rows = [r for r in t.rows if r[0] == task and r[1] == model]
            grid = [r for r in rows if re.fullmatch(r"n\d+_s\d+", r[2])]  # the particles x steps grid
            pts = sorted((r[9], r[7]) for r in grid)
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=model)
            for r in rows:
                if r not in grid:
                    ax.plot([r[9]], [r[7]], marker="*", markersize=9, color=line.get_color(),
                            label=f"{model} {r[2]}", linestyle="none")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor tick labels of a short log axis overlap
        ax.set_xlabel("s/img")
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("PSNR (dB)")
    fig.suptitle(t.title, fontsize=9)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def register(tracker: Tracker, evaluate: dict, ctx: dict[str, Any], params: dict) -> None:
    """Register each evaluated model (``scalewise-<model>``) and move its ``champion`` alias to
    the lowest-FID version evaluated under this protocol (:mod:`scalewise.project.registry`)."""
    if not tracker.enabled:
        return
    from scalewise.project.registry import register_evaluated

    client = tracker.client()
    experiment = client.get_run(tracker.run_id).info.experiment_id
    ev = params.get("evaluate", {})
    protocol = (f"{ctx['dataset']}; {ctx['image size']}; {ev.get('samples_per_class')} samples per class, "
                f"seed {ev.get('seed')}; {ctx['extractor']}")  # FIDs compare only under one protocol
    for model, settings in evaluate.items():
        path = Path(f"models/{model}.pt")
        version = register_evaluated(client, experiment, model, path, settings["default"]["fid"], protocol) \
            if path.is_file() else None
        if version is None:
            print(f"report: {model}: no MLflow run logged the weights of {path}; not registered")
            continue
        champion = client.get_model_version_by_alias(version.name, "champion")
        print(f"report: registered {version.name} version {version.version} (FID {settings['default']['fid']:.2f}); "
              f"champion: version {champion.version}")


def _read(path: str | Path, stage: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (run `dvc repro {stage}`)")
    return json.loads(path.read_text())


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--degraded", default="data/degraded", help="the measurements (stage degrade)")
    ap.add_argument("--studies", action="store_true",
                    help="the studies T4b-T4d and T8 (paper/dvc.yaml: report_studies) instead of the main tables")
    args = ap.parse_args()
    params = load_params(args.params)
    sweep_models = (section(params, "evaluate", args.params).get("sweeps") or {}).get("models") or ["srdd"]
    evaluate = gather(Path("metrics/evaluate"))
    heads_model = (params.get("evaluate_heads") or {}).get("model", "srdd")
    heads_path, train_heads_path = Path("metrics/evaluate_heads.json"), Path("metrics/train_heads.json")
    if heads_path.is_file() and heads_model in evaluate:  # the heads' modes beside the model's own settings
        evaluate[heads_model].update(json.loads(heads_path.read_text()))
    heads = json.loads(train_heads_path.read_text()) if train_heads_path.is_file() else None
    recon = _read("metrics/evaluate_reconstruct.json", "evaluate_reconstruct")
    manifest = json.loads((Path(args.data) / "manifest.json").read_text())
    degraded = _read(Path(args.degraded) / "manifest.json", "degrade")
    frontier = distill_frontier = cost = None
    if args.studies:
        frontier = _read(FRONTIER_FILE, "paper/dvc.yaml:posterior_frontier")
        cost = _read("metrics/restore_cost.json", "paper/dvc.yaml:restore_cost")
        distill_frontier = _read("metrics/distill_frontier.json", "paper/dvc.yaml:distill_frontier")
    ev_path = Path("metrics/train_evaluator.json")
    evaluator = json.loads(ev_path.read_text()) if ev_path.is_file() else None
    ctx = context(params, evaluate, manifest, evaluator)
    names, out_files, out_plots = (STUDY_TABLES, STUDY_FILES, STUDY_PLOTS) if args.studies else \
        (TABLES, TABLE_FILES, TABLE_PLOTS)
    try:
        tables = build_tables(list(names), evaluate, recon, ctx, sweep_model=sweep_models[0], frontier=frontier,
                              table_notes=table_notes(params, manifest, degraded), heads=heads,
                              distill_frontier=distill_frontier, cost=cost)
    except MissingResult as exc:  # a KeyError: make it the stage's one-line error
        raise ValueError(str(exc)) from exc
    with tracked("report_studies" if args.studies else "report", params, {}) as tracker:
        texts = (to_markdown(tables), to_csv(tables), to_latex(tables))
        files = [write_text(path, text) for path, text in zip(out_files, texts)]
        files += plot_sweeps({t.key: t for t in tables}, Path(out_plots))
        tracker.set_tags({"scalewise.tables": ",".join(t.key for t in tables)})
        if not args.studies:
            summary = headline(evaluate, recon)
            files[:0] = [write_json("metrics/evaluate.json", evaluate), write_json(HEADLINE_FILE, summary)]
            tracker.log_metrics({f"_headline/{k}": v for k, v in flatten(summary).items()})
            register(tracker, evaluate, ctx, params)
            keys = ("fid", "isc", "kid", "precision", "recall", "images_per_s", "peak_memory_bytes", "steps")
            for _, model, setting in T1_ROWS:  # T1 as metrics: compare runs side by side in the MLflow UI
                r = evaluate[model][setting]
                tracker.log_metrics({f"t1/{model}/{setting.replace('+', '_')}/{k}": float(r[k]) for k in keys})
        tracker.log_artifacts(files, "paper_tables")
    print(f"{'report_studies' if args.studies else 'report'}: {len(tables)} tables -> {out_files[0]}, .csv, .tex")


if __name__ == "__main__":
    run_main(main)
