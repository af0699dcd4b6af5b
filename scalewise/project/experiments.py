"""DVC experiments for table rows whose *training* settings differ from the workspace's.

``params.yaml: paper_table.experiments`` maps an experiment name to ``-S`` overrides, e.g.
``srdd_from_var: ["train.srdd.init_from=models/var.pt"]``. :func:`run_missing` queues each one
DVC does not know yet (``dvc exp run --queue -n <name> -S ...``) and runs the queue one at a
time (``dvc exp run --run-all --jobs 1``); :func:`experiment_table` reads their generation
metrics back from ``dvc exp show --json`` as table ``T6``. The workspace is never modified.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from scalewise.core.config import ConfigError
from scalewise.evaluation.paper_tables import Table
from scalewise.project.env import venv_env
from scalewise.project.tracking import default_tracking_uri

EVALUATE_METRICS = "metrics/evaluate.json"


def check_experiments(experiments: Any) -> dict[str, list[str]]:
    """Validate ``paper_table.experiments``: ``{name: ["section.key=value", ...]}``."""
    if experiments in (None, {}):
        return {}
    if not isinstance(experiments, dict):
        raise ConfigError("paper_table.experiments must map a name to a list of 'key=value' overrides")
    out = {}
    for name, overrides in experiments.items():
        if not str(name).replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"paper_table.experiments: name {name!r} may hold only letters, digits, '-' and '_'")
        if not isinstance(overrides, list) or not overrides or not all(isinstance(o, str) and "=" in o
                                                                         for o in overrides):
            raise ConfigError(f"paper_table.experiments.{name}: expected a non-empty list of 'key=value' "
                              f"overrides (as for `dvc exp run -S`), got {overrides!r}")
        out[str(name)] = list(overrides)
    return out


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = venv_env()
    # Experiments run in temporary copies of the repository: their stages log to this
    # workspace's MLflow store (run names "<experiment>/<stage>"), not to a copy of it.
    env["MLFLOW_TRACKING_URI"] = default_tracking_uri(root)
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed in {root}:\n{proc.stdout}\n{proc.stderr}".strip())
    return proc


def shown(root: str | os.PathLike) -> dict[str, dict]:
    """``{experiment name: its metrics {file: data}}`` of the experiments of the current commit."""
    data = json.loads(_dvc(Path(root), "exp", "show", "--json").stdout or "[]")
    out = {}
    for rev in data:
        for exp in rev.get("experiments") or []:
            for r in exp.get("revs") or []:
                if r.get("name") and r.get("data"):
                    files = _json_files(Path(root), r["rev"]) if r.get("rev") else {}
                    files.update({f: m.get("data", {}) for f, m in (r["data"].get("metrics") or {}).items()})
                    out[r["name"]] = files
    return out


def _json_files(root: Path, rev: str, folder: str = "metrics") -> dict[str, Any]:
    """``{path: data}`` of the JSON records under ``folder`` in an experiment's commit. Most are plain
    outputs (``cache: false``, committed with the experiment), not DVC metrics, so ``dvc exp show``
    does not list them."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    try:
        names = [n for n in git("ls-tree", "-r", "--name-only", rev, "--", folder).splitlines() if n.endswith(".json")]
        return {n: json.loads(git("show", f"{rev}:{n}")) for n in names}
    except (subprocess.CalledProcessError, json.JSONDecodeError):
        return {}


def run_missing(root: str | os.PathLike, experiments: dict[str, list[str]], targets: tuple[str, ...] = ()) -> list[str]:
    """Queue and run the experiments DVC does not have yet; returns the names that ran.

    ``targets``: the stages each experiment reproduces (with what they depend on); empty = all of
    ``dvc.yaml``. Stages outside them keep the baseline's outputs.
    """
    root = Path(root)
    todo = [name for name in experiments if name not in shown(root)]
    for name in todo:
        args = ["exp", "run", "--queue", "-n", name]
        for override in experiments[name]:
            args += ["-S", override]
        _dvc(root, *args, *targets)
    if todo:
        _dvc(root, "exp", "run", "--run-all", "--jobs", "1")
    return todo


def experiment_table(root: str | os.PathLike, experiments: dict[str, list[str]]) -> Table:
    """T6: the default-setting generation metrics of every model in each experiment."""
    t = Table("T6", "Experiments (training settings that differ)",
              ["experiment", "overrides", "model", "FID", "IS", "KID", "precision", "recall", "img/s"])
    results = shown(root)
    for name, overrides in experiments.items():
        if name not in results or EVALUATE_METRICS not in results[name]:
            raise RuntimeError(f"experiment {name!r} has no {EVALUATE_METRICS} (see `dvc exp show`; "
                               "a failed experiment is listed by `dvc queue status`)")
        for model, settings in results[name][EVALUATE_METRICS].items():
            r = settings["default"]
            t.rows.append([name, " ".join(overrides), model, r["fid"], r["isc"], r["kid"], r["precision"],
                           r["recall"], r["images_per_s"]])
    return t


EXPERIMENT_FILES = ("reports/paper_experiments.md", "reports/paper_experiments.csv",
                    "reports/paper_experiments.tex")


def publish(root: str | os.PathLike, experiments: dict[str, list[str]], context: dict[str, Any],
            run: bool = True) -> list[Path]:
    """Run the missing experiments (when ``run``) and write T6 as Markdown / CSV / LaTeX; returns the files.

    Nothing is written when ``experiments`` is empty.
    """
    from scalewise.core.io import write_text
    from scalewise.evaluation.paper_tables import to_csv, to_latex, to_markdown

    if not experiments:
        return []
    root = Path(root)
    if run:
        run_missing(root, experiments)
    table = experiment_table(root, experiments)
    table.notes = [f"{k}: {v}" for k, v in context.items()]
    texts = (to_markdown([table]), to_csv([table]), to_latex([table]))
    return [write_text(root / rel, text) for rel, text in zip(EXPERIMENT_FILES, texts)]
