"""The SRDD-style result tables, built from the pipeline's metrics and rendered as Markdown, CSV
and LaTeX (pure functions: the ``report`` stage reads the files and writes the outputs).

- ``T1`` generation: VAR, SRDD, SRDD + simple / masked resampling, SRDD + MR + tuned CFG,
  distilled SRDD: FID, IS, KID, precision, recall, steps, img/s, peak memory.
- ``T2`` masked-resampling sweep (threshold x iterations) and ``T3`` CFG sweep (every model with one).
- ``T4`` inverse problems: task x method x model: PSNR, SSIM, FID, consistency, s/img.
- ``T4b`` posterior-sampling frontier: task x model x (particles, steps per scale): PSNR,
  consistency, s/img and the cost as a multiple of the unguided prior's.
- ``T4c`` the posterior sampler against its goals and ``T4d`` SRDD vs VAR (:mod:`.posterior_goals`).
- ``T5`` efficiency: VAR vs SRDD vs distilled: img/s, attention-cache bytes, peak memory.
- ``T7`` learned sampling heads (SRDD): the inference modes (baseline, policy, guidance, both)
  against fixed masked resampling: FID, IS, precision, recall, steps, img/s, head parameters.
- ``T8`` the scale-distillation frontier: students dropping 1..4 scales, FID against speed-up,
  and the default rule's pick (:mod:`.distill_frontier`).
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from scalewise.evaluation.distill_frontier import t8_distill_frontier
from scalewise.evaluation.posterior_goals import t4c_goals, t4d_srdd_vs_var
from scalewise.evaluation.tables import MissingResult, Table

TABLES = ("T1", "T2", "T3", "T4", "T5", "T7")  # written by the `report` stage (dvc.yaml, `make repro`)
# the studies: written by `report_studies` (paper/dvc.yaml, run by `scalewise paper-table`, not by `make repro`)
STUDY_TABLES = ("T4b", "T4c", "T4d", "T8")
SEED_TABLES = ("T9", "T9b")  # training seeds as DVC experiments (scalewise.evaluation.seeds), by paper-table
# T6: DVC experiments (scalewise.project.experiments), written by paper-table
ALL_TABLES = TABLES + STUDY_TABLES + ("T6",) + SEED_TABLES
TABLE_FILES = ("reports/paper_tables.md", "reports/paper_tables.csv", "reports/paper_tables.tex")  # TABLES
TABLE_PLOTS = "reports/paper_tables"  # the plots of T2 / T3 (sweeps) and T7 (FID vs time)
STUDY_FILES = ("reports/paper_studies.md", "reports/paper_studies.csv", "reports/paper_studies.tex")
STUDY_PLOTS = "reports/paper_studies"  # the plots of T4b (posterior frontier) and T8 (distillation frontier)
FRONTIER_FILE = "metrics/posterior_frontier.json"  # T4b's source, written by the `posterior_frontier` stage

# T1 rows: (label, model, setting)
T1_ROWS = (
    ("VAR", "var", "default"),
    ("SRDD", "srdd", "default"),
    ("SRDD + simple resampling", "srdd", "simple"),
    ("SRDD + masked resampling", "srdd", "masked"),
    ("SRDD + MR + tuned CFG", "srdd", "masked_tuned_cfg"),
    ("SRDD distilled", "srdd_distilled", "default"),
)
T5_ROWS = (("VAR", "var"), ("SRDD", "srdd"), ("SRDD distilled", "srdd_distilled"))
# T7 rows: (label, setting of the heads' model); the last three come from the evaluate_heads stage
T7_ROWS = (("baseline", "default"), ("fixed masked resampling", "masked"), ("learned policy", "policy"),
           ("learned tau / CFG", "guidance"), ("policy + tau / CFG", "both"))
HEAD_SETTINGS = ("policy", "guidance", "both")
MIB = 2**20


def check_names(names: list[str], allowed: tuple[str, ...] = TABLES) -> list[str]:
    """Validate table names (case-insensitive: ``t4b`` is ``T4b``); raise ValueError naming the unknown
    ones. Returns the names as spelled in ``allowed``; empty = all."""
    spelled = {n.upper(): n for n in allowed}
    wanted = [n.strip().upper() for n in names if n.strip()]
    unknown = [n for n in wanted if n not in spelled]
    if unknown:
        raise ValueError(f"unknown table name(s) {unknown}; allowed: {list(allowed)}")
    return [spelled[n] for n in wanted] or list(allowed)


def _result(evaluate: dict, model: str, setting: str) -> dict:
    if model not in evaluate:
        raise MissingResult(f"metrics/evaluate.json has no model {model!r} (add it to params.yaml: evaluate.models)")
    if setting not in evaluate[model]:
        raise MissingResult(f"metrics/evaluate.json: model {model!r} has no setting {setting!r} "
                            f"(add it to params.yaml: evaluate.settings or evaluate.sweeps)")
    return evaluate[model][setting]


def t1_generation(evaluate: dict) -> Table:
    cols = ["method", "model", "setting", "FID", "IS", "KID", "precision", "recall", "steps", "img/s", "peak MiB"]
    t = Table("T1", "Generation", cols)
    for label, model, setting in T1_ROWS:
        r = _result(evaluate, model, setting)
        shown = setting if setting != "masked_tuned_cfg" else f"masked, cfg={r['setting']['cfg']:g}"
        t.rows.append([label, model, shown, r["fid"], r["isc"], r["kid"], r["precision"], r["recall"], r["steps"],
                       r["images_per_s"], r["peak_memory_bytes"] / MIB])
    return t


_MASKED = re.compile(r"^masked_t([0-9.e-]+)_n(\d+)$")
_CFG = re.compile(r"^cfg([0-9.]+(?:e[+-]?\d+)?)$")


def t2_masked_sweep(evaluate: dict, model: str = "srdd") -> Table:
    t = Table("T2", f"Masked-resampling sweep ({model})",
              ["threshold", "iterations", "FID", "IS", "precision", "recall", "steps", "img/s"])
    points = sorted((float(m.group(1)), int(m.group(2)), name) for name in evaluate.get(model, {})
                    if (m := _MASKED.match(name)))
    if not points:
        raise MissingResult(f"metrics/evaluate.json: model {model!r} has no masked-resampling sweep "
                            "(set params.yaml: evaluate.sweeps.masked_threshold and masked_iters)")
    for thr, n, name in points:
        r = evaluate[model][name]
        t.rows.append([thr, n, r["fid"], r["isc"], r["precision"], r["recall"], r["steps"], r["images_per_s"]])
    return t


def t3_cfg_sweep(evaluate: dict, model: str = "srdd") -> Table:
    """The CFG sweep of every model that has one (``model`` first), e.g. VAR beside SRDD."""
    models = [model] + sorted(m for m in evaluate if m != model)
    t = Table("T3", "CFG sweep", ["model", "cfg", "resampling", "FID", "IS", "KID", "precision", "recall"])
    for m in models:
        points = sorted((float(c.group(1)), name) for name in evaluate.get(m, {}) if (c := _CFG.match(name)))
        for cfg, name in points:
            r = evaluate[m][name]
            t.rows.append([m, cfg, r["setting"]["resample_kind"], r["fid"], r["isc"], r["kid"], r["precision"],
                           r["recall"]])
    if not any(r[0] == model for r in t.rows):
        raise MissingResult(f"metrics/evaluate.json: model {model!r} has no CFG sweep (set params.yaml: "
                            "evaluate.sweeps.cfg)")
    return t


def t4_inverse(recon: dict) -> Table:
    t = Table("T4", "Inverse problems", ["task", "method", "model", "PSNR (dB)", "SSIM", "FID", "consistency", "s/img"])
    if not recon:
        raise MissingResult("metrics/evaluate_reconstruct.json is empty (run `dvc repro evaluate_reconstruct`)")
    tasks = sorted({task for v in recon.values() for task in v})
    for task in tasks:
        methods = list(dict.fromkeys(m for v in recon.values() for m in v.get(task, {})))
        for method in methods:
            for model in sorted(recon):
                r = recon[model].get(task, {}).get(method)
                if r is None:
                    continue
                t.rows.append([task, method, model, r["psnr"], r["ssim"], r["fid"], r["consistency"],
                               r["sec_per_image"]])
    return t


def inverse_notes(degraded: dict, num_test: int | None = None) -> dict[str, str]:
    """T4 / T4b's own notes from ``data/degraded/manifest.json`` (``degraded``): test images per task,
    the validation subset the posterior settings were tuned on, and the measurement noise."""
    pool = f" of the {num_test} test images" if num_test else " of the test split"
    notes = {"test images": f"{degraded.get('num_images')} per task (a seeded random subset{pool}, "
                            f"seed {degraded.get('seed')})"}
    n_val = degraded.get("validation_images", 0)
    notes["tuning"] = (f"posterior settings tuned on a disjoint validation subset of {n_val} test images "
                       f"(seed {degraded.get('validation_seed')}), never on the reported ones" if n_val else
                       "no validation subset (degrade.validation_images: 0): posterior settings not tuned "
                       "on held-out images")
    notes["noise"] = f"sigma_y = {degraded.get('sigma_y')} (std of Gaussian noise on A(x), images in [-1, 1])"
    notes["timing"] = ("s/img is wall time per image at the stage's batch size, after one untimed warm-up batch, "
                       "on the machine that ran the stage")
    return notes


def t4b_frontier(frontier: dict | None) -> Table:
    """PSNR vs seconds per image of posterior sampling: one row per (task, model, setting)."""
    t = Table("T4b", "Posterior sampling frontier: PSNR vs seconds",
              ["task", "model", "setting", "particles", "steps per scale", "resampling iters", "PSNR guided (dB)",
               "PSNR guided_mean (dB)", "consistency", "s/img", "x prior"])
    if not frontier:
        raise MissingResult(f"{FRONTIER_FILE} is missing or empty (run `dvc repro posterior_frontier`)")
    tasks = sorted({task for v in frontier.values() for task in v})
    for task in tasks:
        for model in sorted(frontier):
            settings = frontier[model].get(task, {})
            for name, r in sorted(settings.items(), key=lambda kv: (kv[1].get("resample_iters", 0),
                                                                     kv[1]["particles"], kv[1]["steps"], kv[0])):
                t.rows.append([task, model, name, r["particles"], r["steps"], r.get("resample_iters", 0), r["psnr"],
                               r.get("psnr_mean", r["psnr"]), r["consistency"], r["sec_per_image"],
                               r["ratio_to_prior"]])
    return t


def t5_efficiency(evaluate: dict) -> Table:
    t = Table("T5", "Efficiency (default sampling setting)",
              ["model", "steps", "img/s", "speed-up vs VAR", "attention cache (bytes)", "peak MiB"])
    base = _result(evaluate, "var", "default")["images_per_s"]
    for label, model in T5_ROWS:
        r = _result(evaluate, model, "default")
        t.rows.append([label, r["steps"], r["images_per_s"], r["images_per_s"] / base, r["cache_bytes"],
                       r["peak_memory_bytes"] / MIB])
    return t


def t7_heads_ablation(evaluate: dict, heads: dict | None, model: str = "srdd") -> Table:
    """The learned-heads modes beside baseline sampling and fixed masked resampling (``heads``:
    ``metrics/train_heads.json``, for the heads' size and test losses)."""
    if heads is None:
        raise MissingResult("metrics/train_heads.json is missing (run `dvc repro train_heads`)")
    t = Table("T7", f"Learned sampling heads ({model}): inference modes vs fixed masked resampling",
              ["mode", "setting", "FID", "IS", "precision", "recall", "steps", "img/s", "head params"])
    for label, setting in T7_ROWS:
        r = _result(evaluate, model, setting)
        t.rows.append([label, setting, r["fid"], r["isc"], r["precision"], r["recall"], r["steps"],
                       r["images_per_s"], heads["head_params"] if setting in HEAD_SETTINGS else 0])
    t.notes.append(f"heads: {heads['head_params']} parameters ({heads['head_param_fraction']:.2%} of the transformer), "
                   f"backbone {'frozen' if heads.get('freeze_backbone', True) else 'fine-tuned'}; test losses "
                   f"(trained vs untrained heads): tau NLL {heads['tau']:.4f} vs {heads['baseline_tau']:.4f}, "
                   f"CFG CE {heads['cfg']:.4f} vs {heads['baseline_cfg']:.4f}, policy {heads['policy']:.4f} vs "
                   f"{heads['baseline_policy']:.4f}; mean tau {heads['tau_mean']:.3f}, mean CFG multiplier "
                   f"{heads['cfg_mult_mean']:.3f}, re-mask share {heads['remask_frac']:.3f}")
    t.notes.append("steps: transformer forwards per image (the most in a batch); the policy modes stop early "
                   "when the group-size head says so, with at most as many iterations as the fixed rule")
    return t


def build_tables(names: list[str], evaluate: dict, recon: dict, context: dict[str, Any],
                 sweep_model: str = "srdd", frontier: dict | None = None,
                 table_notes: dict[str, dict[str, Any]] | None = None, heads: dict | None = None,
                 distill_frontier: dict | None = None, cost: dict | None = None) -> list[Table]:
    """The tables ``names`` (of :data:`TABLES` and :data:`STUDY_TABLES`); every table carries the ``context`` notes.

    ``context`` holds what a reader needs to compare numbers of any table: dataset, image size,
    extractor, seeds, git commit. ``table_notes`` adds one table's own notes after them (keyed by
    table name: the sample counts of the generation tables, :func:`inverse_notes` for T4 / T4b).
    ``frontier`` is ``metrics/posterior_frontier.json`` for T4b, ``heads``
    ``metrics/train_heads.json`` for T7, ``distill_frontier`` ``metrics/distill_frontier.json``
    for T8, ``cost`` ``metrics/restore_cost.json`` for the cost columns of T4c and T4d. Raises
    :class:`MissingResult` naming an absent result.
    """
    builders = {"T1": lambda: t1_generation(evaluate), "T2": lambda: t2_masked_sweep(evaluate, sweep_model),
                "T3": lambda: t3_cfg_sweep(evaluate, sweep_model), "T4": lambda: t4_inverse(recon),
                "T4b": lambda: t4b_frontier(frontier), "T4c": lambda: t4c_goals(recon, frontier, cost),
                "T4d": lambda: t4d_srdd_vs_var(frontier, cost), "T5": lambda: t5_efficiency(evaluate),
                "T7": lambda: t7_heads_ablation(evaluate, heads, sweep_model),
                "T8": lambda: t8_distill_frontier(distill_frontier)}
    notes = [f"{k}: {v}" for k, v in context.items()]
    tables = []
    for name in check_names(names, TABLES + STUDY_TABLES):
        table = builders[name]()
        own = [f"{k}: {v}" for k, v in (table_notes or {}).get(name, {}).items()]
        table.notes = notes + own + table.notes
        tables.append(table)
    return tables


# ----------------------------------------------------------------------------- rendering


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def to_markdown(tables: list[Table]) -> str:
    out = ["# Paper tables", ""]
    for t in tables:
        out += [f"## {t.key}: {t.title}", ""]
        out += [f"- {n}" for n in t.notes] + [""]
        out += ["| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
        out += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in t.rows]
        out.append("")
    return "\n".join(out)


def to_csv(tables: list[Table]) -> str:
    """One CSV: columns ``table, row, column, value`` (long format: tables have different columns)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "row", "column", "value"])
    for t in tables:
        for i, row in enumerate(t.rows):
            for col, cell in zip(t.columns, row):
                w.writerow([t.key, i, col, "" if cell is None else cell])
    return buf.getvalue()


_TEX_ESCAPE = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
               "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in text)


def to_latex(tables: list[Table]) -> str:
    """One ``table`` environment per table (booktabs), the notes in the caption."""
    out = ["% scalewise paper tables (needs \\usepackage{booktabs})", ""]
    for t in tables:
        align = "l" * sum(1 for c in t.rows[0] if isinstance(c, str)) if t.rows else ""
        align += "r" * (len(t.columns) - len(align))
        out += ["\\begin{table}[t]", "\\centering", f"\\begin{{tabular}}{{{align}}}", "\\toprule",
                " & ".join(_tex(c) for c in t.columns) + " \\\\", "\\midrule"]
        out += [" & ".join(_tex(_fmt(c)) for c in row) + " \\\\" for row in t.rows]
        out += ["\\bottomrule", "\\end{tabular}",
                f"\\caption{{{_tex(t.key)}: {_tex(t.title)}. {_tex('; '.join(t.notes))}.}}",
                f"\\label{{tab:{t.key.lower()}}}", "\\end{table}", ""]
    return "\n".join(out)


def select_markdown(markdown: str, names: list[str]) -> str:
    """The sections ``## T<n>: ...`` / ``## T<n><letter>: ...`` of a rendered tables file for the tables ``names``."""
    wanted = set(check_names(names, ALL_TABLES))
    head, *sections = re.split(r"(?m)^(?=## T\d+[a-z]?: )", markdown)
    kept = [s for s in sections if s[3:].split(":", 1)[0] in wanted]
    return head + "".join(kept)
