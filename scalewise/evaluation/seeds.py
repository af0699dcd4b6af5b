"""T9 / T9b: the generation results over several training seeds, and the claims they support.

One *seed* is one training run of everything a claim compares (VAR and SRDD, the heads, the
distillation students) with the data, tokenizer, evaluator and sampling seeds held fixed. Its
results are the metrics files of :data:`SEED_FILES` (``{file: json}``), read from the workspace
or from a DVC experiment (:mod:`scalewise.project.seeds`).

- ``T9`` one row per result (T1's VAR / SRDD, T7's modes, T8's teacher and students): mean ± std
  over the seeds of FID, IS, precision, recall, img/s (and the students' speed-up).
- ``T9b`` the claims the tables make, as differences ``a - b`` paired by seed: their mean, the
  std of the per-seed differences (the *spread*), how many seeds agree in sign, and a verdict.
  A claim *holds* only when ``|mean| > spread`` and every seed agrees in sign; otherwise it is
  *within the spread* and no conclusion may rest on it.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from scalewise.evaluation.tables import MissingResult, Table

SEED_FILES = ("metrics/evaluate/var.json", "metrics/evaluate/srdd.json", "metrics/evaluate_heads.json",
              "metrics/distill_frontier.json")
METRICS = (("FID", "fid"), ("IS", "isc"), ("precision", "precision"), ("recall", "recall"),
           ("img/s", "images_per_s"))
# (table, row label, file, path of keys to the record)
ROWS = (
    ("T1", "VAR", "metrics/evaluate/var.json", ("default",)),
    ("T1", "SRDD", "metrics/evaluate/srdd.json", ("default",)),
    ("T7", "SRDD + fixed masked resampling", "metrics/evaluate/srdd.json", ("masked",)),
    ("T7", "SRDD + learned policy", "metrics/evaluate_heads.json", ("policy",)),
    ("T7", "SRDD + learned tau / CFG", "metrics/evaluate_heads.json", ("guidance",)),
    ("T7", "SRDD + policy + tau / CFG", "metrics/evaluate_heads.json", ("both",)),
    ("T8", "teacher (SRDD)", "metrics/distill_frontier.json", ("teacher",)),
)
# (claim, a, b, metric key, better): a - b paired by seed; ``better`` is the sign a claim of "a is
# better than b" needs (-1: lower is better, +1: higher is better)
CLAIMS = (
    ("SRDD vs VAR (T1)", "SRDD", "VAR", "fid", -1),
    ("fixed masked resampling vs baseline (T7)", "SRDD + fixed masked resampling", "SRDD", "fid", -1),
    ("fixed masked resampling vs baseline (T7)", "SRDD + fixed masked resampling", "SRDD", "recall", +1),
    ("learned policy vs fixed masked resampling (T7)", "SRDD + learned policy", "SRDD + fixed masked resampling",
     "fid", -1),
    ("learned tau / CFG vs baseline (T7)", "SRDD + learned tau / CFG", "SRDD", "fid", -1),
    ("learned tau / CFG vs baseline (T7)", "SRDD + learned tau / CFG", "SRDD", "recall", +1),
    ("policy + tau / CFG vs fixed masked resampling (T7)", "SRDD + policy + tau / CFG",
     "SRDD + fixed masked resampling", "fid", -1),
    ("policy + tau / CFG vs fixed masked resampling (T7)", "SRDD + policy + tau / CFG",
     "SRDD + fixed masked resampling", "recall", +1),
    ("policy + tau / CFG vs fixed masked resampling (T7)", "SRDD + policy + tau / CFG",
     "SRDD + fixed masked resampling", "images_per_s", +1),
)


def _record(results: dict[str, Any], file: str, keys: tuple[str, ...], seed: int) -> dict:
    data = results.get(file)
    if data is None:
        raise MissingResult(f"seed {seed}: no {file} (its experiment did not run the stage that writes it)")
    for key in keys:
        if key not in data:
            raise MissingResult(f"seed {seed}: {file} has no {'.'.join(keys)}")
        data = data[key]
    return data


def seed_records(per_seed: dict[int, dict[str, Any]]) -> dict[tuple[str, str], dict[int, dict]]:
    """``{(table, row): {seed: record}}`` with ``fid``, ``isc``, ``precision``, ``recall``,
    ``images_per_s`` (and a student's ``speedup``) of every row of :data:`ROWS` plus one row per
    distillation student (``student <name>``, e.g. ``student drop1``), from ``per_seed`` = ``{seed: {metrics file: json}}``.

    Raises :class:`MissingResult` naming the seed and the file when a result is absent.
    """
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for seed, results in per_seed.items():
        for table, label, file, keys in ROWS:
            out.setdefault((table, label), {})[seed] = _record(results, file, keys, seed)
        students = _record(results, "metrics/distill_frontier.json", ("students",), seed)
        for name, record in students.items():  # by name: `dvc exp show` leaves lists (the drops) out
            out.setdefault(("T8", f"student {name}"), {})[seed] = record
    seeds = sorted(per_seed)
    for (table, label), by_seed in out.items():
        if sorted(by_seed) != seeds:
            raise MissingResult(f"T9 row {table} {label!r}: results for seeds {sorted(by_seed)}, not {seeds} "
                                "(the seeds' students differ: give every seed the same distill_frontier.students)")
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample std) of ``values``; the std is NaN for a single value."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan


def pm(values: list[float], digits: int = 3) -> str:
    """``"mean ± std"`` (just the mean for one value)."""
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def t9_seeds(per_seed: dict[int, dict[str, Any]]) -> Table:
    """T9: mean ± std over the seeds of every T1 / T7 / T8 result (see :func:`seed_records`)."""
    seeds = sorted(per_seed)
    t = Table("T9", f"Over {len(seeds)} training seeds: mean ± std",
              ["table", "row", *[name for name, _ in METRICS], "speed-up", "FID per seed"])
    for (table, label), by_seed in seed_records(per_seed).items():
        recs = [by_seed[s] for s in seeds]
        speed = [r["speedup"] for r in recs if "speedup" in r]
        t.rows.append([table, label, *[pm([float(r[key]) for r in recs], 1 if key == "images_per_s" else 3)
                                       for _, key in METRICS],
                       pm(speed, 2) if len(speed) == len(recs) else "",
                       " / ".join(f"{float(r['fid']):.3f}" for r in recs)])
    t.notes.append(f"training seeds {seeds} (seed {seeds[0]} is the workspace's own run); std: sample std over seeds")
    return t


def t9b_claims(per_seed: dict[int, dict[str, Any]]) -> Table:
    """T9b: each claim as ``a - b`` paired by seed, its spread and whether it holds (see the module)."""
    seeds = sorted(per_seed)
    records = seed_records(per_seed)
    by_label = {label: by_seed for (_, label), by_seed in records.items()}
    claims = list(CLAIMS)
    for (table, label), _ in records.items():
        if table == "T8" and label.startswith("student "):
            claims.append((f"{label} vs teacher (T8)", label, "teacher (SRDD)", "fid", -1))
    t = Table("T9b", f"Claims over {len(seeds)} training seeds: a - b paired by seed",
              ["claim", "metric", "a - b (mean)", "spread (std)", "per seed", "seeds agreeing", "verdict"])
    for claim, a, b, key, better in claims:
        diffs = [float(by_label[a][s][key]) - float(by_label[b][s][key]) for s in seeds]
        mean, std = mean_std(diffs)
        agree = sum(1 for d in diffs if math.copysign(1, d) == math.copysign(1, mean))
        t.rows.append([claim, key, mean, std, " / ".join(f"{d:+.3f}" for d in diffs), f"{agree}/{len(diffs)}",
                       verdict(mean, std, agree, len(diffs), better)])
    t.notes.append("spread: sample std of the per-seed differences; a claim holds only when |mean| > spread and "
                   "every seed agrees in sign")
    return t


def verdict(mean: float, std: float, agree: int, n: int, better: int) -> str:
    """``a better`` / ``b better`` when the difference exceeds its spread with every seed agreeing,
    ``within spread`` otherwise, ``one seed`` when there is no spread to compare with."""
    if n < 2 or math.isnan(std):
        return "one seed"
    if abs(mean) <= std or agree < n:
        return "within spread"
    return "a better" if math.copysign(1, mean) == better else "b better"
