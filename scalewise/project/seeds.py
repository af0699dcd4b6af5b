"""Training seeds as queued DVC experiments: the spread behind T9 / T9b, run by ``scalewise paper-table``.

``params.yaml: paper_table``:

- ``seeds``: the training seeds, e.g. ``[0, 1, 2]``. The first is the workspace's own run: every
  key of ``seed_params`` must hold it there.
- ``seed_params``: the settings one seed sets (``train.common.seed``, ``distill.seed``,
  ``train_heads.seed``). The data split, tokenizer, evaluator and evaluation seeds stay fixed, so
  the spread is that of the trained transformers, heads and students.
- ``seed_stages``: the stages a seed experiment reproduces (with their upstream); the rest keep
  the workspace's outputs.
- ``seed_overrides``: further ``-S`` overrides of every seed experiment (e.g. no sweeps).

Each seed ``s`` other than the first is the DVC experiment ``seed<s>`` (queued when missing, then
``dvc exp run --run-all``); its results come back from ``dvc exp show --json``
(:func:`scalewise.project.experiments.shown`). The workspace is never modified.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalewise.core.config import ConfigError
from scalewise.evaluation.seeds import SEED_FILES, t9_seeds, t9b_claims
from scalewise.evaluation.tables import MissingResult
from scalewise.project.experiments import run_missing, shown

SEED_REPORTS = ("reports/paper_seeds.md", "reports/paper_seeds.csv", "reports/paper_seeds.tex")
DEFAULT_PARAMS = ["train.common.seed", "distill.seed", "train_heads.seed"]
DEFAULT_STAGES = ["evaluate", "evaluate_heads", "paper/dvc.yaml:distill_frontier"]


@dataclass
class SeedSettings:
    """The validated ``paper_table`` seed settings (see the module)."""

    seeds: list[int]
    params: list[str] = field(default_factory=lambda: list(DEFAULT_PARAMS))
    stages: list[str] = field(default_factory=lambda: list(DEFAULT_STAGES))
    overrides: list[str] = field(default_factory=list)

    def experiments(self) -> dict[str, list[str]]:
        """``{"seed<s>": -S overrides}`` for every seed but the workspace's (the first)."""
        return {f"seed{s}": [f"{key}={s}" for key in self.params] + list(self.overrides) for s in self.seeds[1:]}


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"params.yaml: paper_table.seed_params names {dotted!r}, which params.yaml does not "
                              "have (each entry is a section.key path such as train.common.seed)")
        node = node[part]
    return node


def seed_settings(params: dict[str, Any]) -> SeedSettings | None:
    """``paper_table``'s seed settings, validated against the workspace's params; None without seeds."""
    sec = params.get("paper_table") or {}
    seeds = sec.get("seeds")
    if seeds in (None, []):
        return None
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in seeds):
        raise ConfigError(f"params.yaml: paper_table.seeds must be a list of seeds (integers >= 0), got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"params.yaml: paper_table.seeds repeats a seed: {seeds}")
    out = SeedSettings(seeds=list(seeds))
    for name, attr in (("seed_params", "params"), ("seed_stages", "stages"), ("seed_overrides", "overrides")):
        value = sec.get(name)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"params.yaml: paper_table.{name} must be a list of strings, got {value!r}")
        setattr(out, attr, list(value))
    if not out.params:
        raise ConfigError("params.yaml: paper_table.seed_params is empty: name the seeds a training seed sets")
    bad = [o for o in out.overrides if "=" not in o]
    if bad:
        raise ConfigError(f"params.yaml: paper_table.seed_overrides: expected 'key=value' (as for `dvc exp run -S`), "
                          f"got {bad}")
    for key in out.params:
        value = _lookup(params, key)
        if value != seeds[0]:
            raise ConfigError(f"params.yaml: {key} is {value!r}, but paper_table.seeds[0] = {seeds[0]} is the "
                              f"workspace's seed (set {key}: {seeds[0]} or list {value!r} first)")
    return out


def collect(root: str | os.PathLike, settings: SeedSettings) -> dict[int, dict[str, Any]]:
    """``{seed: {metrics file: json}}``: the first seed from the workspace, the rest from their experiments.

    Raises RuntimeError naming a seed whose experiment is missing (failed or never run).
    """
    root = Path(root)
    per_seed: dict[int, dict[str, Any]] = {settings.seeds[0]: {
        rel: json.loads((root / rel).read_text()) for rel in SEED_FILES if (root / rel).is_file()}}
    results = shown(root) if len(settings.seeds) > 1 else {}
    for seed, name in zip(settings.seeds[1:], settings.experiments()):
        if name not in results:
            raise RuntimeError(f"seed {seed}: no DVC experiment {name!r} for this commit (see `dvc exp show`; a failed "
                               "one is listed by `dvc queue status`, its log by `dvc queue logs <id>`)")
        per_seed[seed] = {rel: results[name][rel] for rel in SEED_FILES if rel in results[name]}
    return per_seed


def publish(root: str | os.PathLike, settings: SeedSettings, context: dict[str, Any], run: bool = True) -> list[Path]:
    """Run the missing seed experiments (when ``run``) and write T9 / T9b as Markdown / CSV / LaTeX."""
    from scalewise.core.io import write_text
    from scalewise.evaluation.paper_tables import to_csv, to_latex, to_markdown

    root = Path(root)
    if run:
        run_missing(root, settings.experiments(), tuple(settings.stages))
    per_seed = collect(root, settings)
    try:
        tables = [t9_seeds(per_seed), t9b_claims(per_seed)]
    except MissingResult as exc:  # a KeyError: make it the command's one-line error
        raise ValueError(str(exc)) from exc
    notes = [f"{k}: {v}" for k, v in context.items()]
    notes.append(f"a seed sets {', '.join(settings.params)}; its experiment reproduces {', '.join(settings.stages)}"
                 + (f" with {' '.join(settings.overrides)}" if settings.overrides else ""))
    for t in tables:
        t.notes = notes + t.notes
    texts = (to_markdown(tables), to_csv(tables), to_latex(tables))
    return [write_text(root / rel, text) for rel, text in zip(SEED_REPORTS, texts)]
