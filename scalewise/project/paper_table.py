"""The paper tables as the CLI and the Prefect flow publish them (after ``dvc repro report`` and
``dvc repro paper/dvc.yaml``): the main tables, the studies, the experiments (T6) and the seeds (T9)."""

from __future__ import annotations

import os
from pathlib import Path

from scalewise.evaluation.paper_tables import (
    SEED_TABLES, STUDY_FILES, STUDY_PLOTS, STUDY_TABLES, TABLE_FILES, TABLE_PLOTS, TABLES, select_markdown,
)
from scalewise.project.experiments import publish
from scalewise.project.seeds import SeedSettings
from scalewise.project.seeds import publish as publish_seeds
from scalewise.project.tracking import git_commit


def repro_targets(names: list[str]) -> list[str]:
    """The DVC stages behind the tables ``names``: ``report`` (main tables, T6 and the seeds' baseline)
    and ``paper/dvc.yaml:report_studies`` (the studies; also the seeds' distillation frontier)."""
    targets = ["report"]
    if any(n in STUDY_TABLES or n in SEED_TABLES for n in names):
        targets.append("paper/dvc.yaml:report_studies")
    return targets


def _section(path: Path, names: list[str], stage: str) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tables yet (run `dvc repro {stage}` or paper-table without --no-repro)")
    return select_markdown(path.read_text(), names).split("\n", 2)[-1]


def collect_tables(root: str | os.PathLike, names: list[str], experiments: dict[str, list[str]],
                   run_experiments: bool = True, seeds: SeedSettings | None = None) -> tuple[str, list[Path]]:
    """(markdown of the tables ``names``, every table file to log) from the ``report`` and
    ``report_studies`` stages' outputs.

    With ``experiments`` and ``T6`` among ``names``, the DVC experiments are run when missing
    (``run_experiments``) and T6 is appended; with ``seeds`` and T9 / T9b among them, the seed
    experiments likewise (T9, T9b).
    """
    root = Path(root)
    text, files = "# Paper tables\n", []
    if any(n in TABLES for n in names):
        text += "\n" + _section(root / TABLE_FILES[0], names, "report")
        files += [root / rel for rel in (*TABLE_FILES, TABLE_PLOTS) if (root / rel).exists()]
    if any(n in STUDY_TABLES for n in names):
        text += "\n" + _section(root / STUDY_FILES[0], names, "paper/dvc.yaml:report_studies")
        files += [root / rel for rel in (*STUDY_FILES, STUDY_PLOTS) if (root / rel).exists()]
    context = {"git commit": git_commit(root)}
    if experiments and "T6" in names:
        written = publish(root, experiments, context, run=run_experiments)
        text += "\n" + select_markdown(written[0].read_text(), ["T6"]).split("\n", 2)[-1]
        files += written
    if seeds is not None and any(n in SEED_TABLES for n in names):
        written = publish_seeds(root, seeds, context, run=run_experiments)
        text += "\n" + select_markdown(written[0].read_text(), names).split("\n", 2)[-1]
        files += written
    return text, files
