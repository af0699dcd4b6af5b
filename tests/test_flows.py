"""The Prefect flow drives real DVC on a tiny synthetic project (own PREFECT_HOME, MLflow store).

The flow runs in a subprocess (``python -m flows.pipeline``) because Prefect reads some
settings at import time; each run starts its own ephemeral Prefect API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]

# b depends on a's output and writes the metrics (nested values and a list).
WRITE_A = "python3 -c \"open('a.txt', 'w').write('a')\""
WRITE_B = ("python3 -c \"import json; open('b.txt', 'w').write(open('a.txt').read() + 'b'); "
           "json.dump({'acc': 0.5, 'loss': {'train': 0.25}, 'sizes': [1, 2]}, open('metrics.json', 'w'))\"")


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory) -> Path:
    """One Prefect home for the module's flow runs: its database is migrated once (saves seconds)."""
    return tmp_path_factory.mktemp("prefect")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, prefect_home, monkeypatch):
    """Offline, telemetry-free tools with their state in tmp dirs."""
    for key, value in {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_LOCAL_STORAGE_PATH": str(prefect_home / "storage"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "GIT_AUTHOR_NAME": "scalewise-test",
        "GIT_AUTHOR_EMAIL": "test@scalewise.invalid",
        "GIT_COMMITTER_NAME": "scalewise-test",
        "GIT_COMMITTER_EMAIL": "test@scalewise.invalid",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("PREFECT_API_URL", "PREFECT_PROFILE", "SCALEWISE_PARENT_RUN_ID"):
        monkeypatch.delenv(key, raising=False)


def sh(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def make_project(root: Path, b_cmd: str = WRITE_B) -> Path:
    """A git + DVC repository whose stages ``a`` -> ``b`` are one-line python commands."""
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump({
        "tracking": {"enabled": True, "experiment": "test"},
        "pipeline": {"cron": "0 3 * * *", "work_pool": "p", "retries": 0},
        "toy": {"n": 1},
    }))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "b": {"cmd": b_cmd, "deps": ["a.txt"], "params": ["toy"], "outs": ["b.txt"],
              "metrics": [{"metrics.json": {"cache": False}}]},
        "a": {"cmd": WRITE_A, "params": ["toy"], "outs": ["a.txt"]},  # listed after b on purpose
    }}, sort_keys=False))
    sh(["git", "init", "-q"], root)
    sh([sys.executable, "-m", "dvc", "init", "-q"], root)
    return root


def run_flow(project: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "flows.pipeline", "--root", str(project)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def parent_runs(client) -> list:
    exp = client.get_experiment_by_name("test")
    runs = client.search_runs([exp.experiment_id])
    return [r for r in runs if r.data.tags.get("scalewise.kind") == "pipeline"]


def test_stage_order_comes_from_dvc(tmp_path):
    from flows.pipeline import stage_order

    assert stage_order(make_project(tmp_path / "project")) == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="no DVC pipeline here"):
        stage_order(tmp_path)


def test_metrics_markdown_flattens_every_metric():
    from flows.pipeline import metrics_markdown

    md = metrics_markdown({"m.json": {"acc": 0.123456, "loss": {"train": 2}, "sizes": [1, 2.5]}})
    assert "| m.json | acc | 0.1235 |" in md
    assert "| m.json | loss.train | 2 |" in md
    assert "| m.json | sizes | [1, 2.5] |" in md


def test_flow_runs_the_stages_through_dvc_and_tracks_them(tmp_path):
    import mlflow

    project = make_project(tmp_path / "project")
    proc = run_flow(project)
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, logs[-4000:]
    assert (project / "b.txt").read_text() == "ab"
    assert logs.index("Running stage 'a'") < logs.index("Running stage 'b'")

    client = mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    (parent,) = parent_runs(client)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["scalewise.orchestrator"] == "prefect"
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["metrics.md"]
    md = Path(client.download_artifacts(parent.info.run_id, "metrics.md", str(tmp_path))).read_text()
    assert "| metrics.json | acc | 0.5 |" in md and "| metrics.json | loss.train | 0.25 |" in md

    # Second run: DVC owns caching, so nothing re-runs and the outputs stay as they were.
    stamp = (project / "b.txt").stat().st_mtime_ns
    again = run_flow(project)
    logs = again.stdout + again.stderr
    assert again.returncode == 0, logs[-4000:]
    assert "Stage 'a' didn't change" in logs and "Stage 'b' didn't change" in logs
    assert "Running stage" not in logs
    assert (project / "b.txt").stat().st_mtime_ns == stamp
    assert json.loads(sh([sys.executable, "-m", "dvc", "status", "--json"], project).stdout) == {}


def test_failing_stage_fails_the_flow_and_names_the_stage(tmp_path):
    import mlflow

    project = make_project(tmp_path / "broken", b_cmd="python3 -c \"print('exploding'); raise SystemExit(1)\"")
    proc = run_flow(project)
    logs = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "stage 'b' failed" in logs and "exploding" in logs
    assert (project / "a.txt").exists()
    (parent,) = parent_runs(mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]))
    assert parent.info.status == "FAILED"


def test_deployment_settings_validate_the_cron(tmp_path):
    from flows.deploy import deployment_settings
    from scalewise.core.config import ConfigError

    good = deployment_settings({"pipeline": {"cron": "*/15 * * * *", "work_pool": "gpu"}}, tmp_path)
    assert good == {"name": "scalewise-pipeline", "cron": "*/15 * * * *", "work_pool": "gpu",
                    "parameters": {"root": str(tmp_path.resolve())}, "entrypoint": "flows/pipeline.py:pipeline"}
    tables = deployment_settings({"pipeline": {"work_pool": "gpu"}, "paper_table": {"cron": "0 5 * * 1"}}, tmp_path,
                                 "paper_table")
    assert tables["name"] == "scalewise-paper-table" and tables["cron"] == "0 5 * * 1"
    assert tables["entrypoint"] == "flows/paper_table.py:paper_table" and tables["work_pool"] == "gpu"
    with pytest.raises(ConfigError, match=r"paper_table\.cron='nightly'"):
        deployment_settings({"pipeline": {"work_pool": "gpu"}, "paper_table": {"cron": "nightly"}}, tmp_path,
                            "paper_table")
    with pytest.raises(ConfigError, match="unknown flow"):
        deployment_settings({"pipeline": {"work_pool": "gpu"}}, tmp_path, "tables")
    with pytest.raises(ConfigError, match=r"pipeline\.cron='every day'"):
        deployment_settings({"pipeline": {"cron": "every day", "work_pool": "gpu"}}, tmp_path)
    with pytest.raises(ConfigError, match=r"pipeline\.cron"):
        deployment_settings({"pipeline": {"cron": "61 * * * *", "work_pool": "gpu"}}, tmp_path)
