"""The scale-distillation frontier: students that drop 1, 2, 3, ... intermediate scales, their
speed-up over the teacher against their FID, and the rule that picks the default student.

``distill_frontier.students`` names each student by the teacher scales it leaves out; the
``distill_frontier`` stage trains them with ``distill``'s settings and records, per student,
``{drop, patch_nums, fid, recall, precision, speedup, ...}`` beside the teacher's FID.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scalewise.core.config import ConfigError
from scalewise.evaluation.tables import MissingResult, Table


@dataclass
class DistillFrontierConfig:
    """``params.yaml: distill_frontier``."""

    students: dict[str, list[int]] = field(default_factory=dict)  # name -> teacher scales left out
    samples_per_class: int = 100  # FID sample count per class (teacher and students alike)
    fid_margin: float = 0.1  # the default is the cheapest student within this FID of the teacher ...
    min_speedup: float = 1.3  # ... or, when that one is slower than this, the best student at least this fast

    def __post_init__(self) -> None:
        if not self.students:
            raise ConfigError("distill_frontier.students: name at least one student, e.g. {drop1: [5]}")
        for name, drop in self.students.items():
            if not isinstance(drop, list) or not drop:
                raise ConfigError(f"distill_frontier.students.{name}: a non-empty list of teacher scales to leave out")
        if self.samples_per_class < 1:
            raise ConfigError(f"distill_frontier.samples_per_class must be >= 1, got {self.samples_per_class}")


def choose_student(records: dict[str, dict[str, Any]], teacher_fid: float, fid_margin: float = 0.1,
                   min_speedup: float = 1.3) -> tuple[str, str]:
    """(name, why) of the default student.

    The cheapest (largest ``speedup``) student with ``fid <= teacher_fid + fid_margin``; if that
    one is less than ``min_speedup`` times faster (or none is that close), the lowest-FID
    student at least ``min_speedup`` times faster instead; if no student is that fast, the
    fastest within the margin (or, failing that, the lowest FID).
    """
    if not records:
        raise ValueError("choose_student: no students")
    close = {n: r for n, r in records.items() if r["fid"] <= teacher_fid + fid_margin}
    fast = {n: r for n, r in records.items() if r["speedup"] >= min_speedup}
    cheapest_close = max(close, key=lambda n: close[n]["speedup"]) if close else None
    if cheapest_close is not None and close[cheapest_close]["speedup"] >= min_speedup:
        return cheapest_close, f"the cheapest student within {fid_margin:g} FID of the teacher"
    if fast:
        best = min(fast, key=lambda n: fast[n]["fid"])
        return best, (f"the lowest-FID student at least {min_speedup:g}x faster (the cheapest within "
                      f"{fid_margin:g} FID, {cheapest_close}, is slower than that)" if cheapest_close else
                      f"the lowest-FID student at least {min_speedup:g}x faster (none is within {fid_margin:g} FID)")
    if cheapest_close is not None:
        return cheapest_close, f"the cheapest within {fid_margin:g} FID (no student reaches {min_speedup:g}x)"
    best = min(records, key=lambda n: records[n]["fid"])
    return best, f"the lowest FID (none within {fid_margin:g} FID of the teacher, none {min_speedup:g}x faster)"


def t8_distill_frontier(frontier: dict | None) -> Table:
    """T8 from ``metrics/distill_frontier.json``: teacher, then each student by scales dropped."""
    if not frontier:
        raise MissingResult("metrics/distill_frontier.json is missing (run `dvc repro distill_frontier`)")
    t = Table("T8", "Scale distillation frontier (SRDD teacher)",
              ["student", "scales dropped", "patch_nums", "FID", "recall", "precision", "speed-up", "img/s",
               "default"])
    tr = frontier["teacher"]
    t.rows.append(["teacher", 0, str(tr["patch_nums"]), tr["fid"], tr["recall"], tr["precision"], 1.0,
                   tr["images_per_s"], ""])
    chosen = frontier.get("chosen")
    for name, r in sorted(frontier["students"].items(), key=lambda kv: len(kv[1]["drop"])):
        t.rows.append([name, len(r["drop"]), str(r["patch_nums"]), r["fid"], r["recall"], r["precision"],
                       r["speedup"], r["images_per_s"], "yes" if name == chosen else ""])
    if chosen:
        t.notes.append(f"default rule: {frontier.get('why', '')}: {chosen}")
    t.notes.append("speed-up: student vs teacher sampling, timed side by side in the stage; one training seed")
    return t
