"""The paper tables as the CLI and the Prefect flow publish them (after ``dvc repro report``)."""

from __future__ import annotations

import os
from pathlib import Path

from scalewise.evaluation.paper_tables import TABLE_FILES, TABLE_PLOTS, select_markdown
from scalewise.project.experiments import publish
from scalewise.project.tracking import git_commit


def collect_tables(root: str | os.PathLike, names: list[str], experiments: dict[str, list[str]],
                   run_experiments: bool = True) -> tuple[str, list[Path]]:
    """(markdown of the tables ``names``, every table file to log) from the ``report`` stage's output.

    With ``experiments`` and ``T6`` among ``names``, the DVC experiments are run when missing
    (``run_experiments``) and T6 is appended.
    """
    root = Path(root)
    md_path = root / TABLE_FILES[0]
    if not md_path.is_file():
        raise FileNotFoundError(f"{md_path}: no tables yet (run `dvc repro report` or paper-table without --no-repro)")
    text = select_markdown(md_path.read_text(), names)
    files = [root / rel for rel in (*TABLE_FILES, TABLE_PLOTS) if (root / rel).exists()]
    if experiments and "T6" in names:
        written = publish(root, experiments, {"git commit": git_commit(root)}, run=run_experiments)
        text += "\n" + select_markdown(written[0].read_text(), ["T6"]).split("\n", 2)[-1]
        files += written
    return text, files
