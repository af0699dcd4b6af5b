"""The Prefect flow drives the real DVC pipeline on Prefect's ephemeral API (own PREFECT_HOME)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from swtest import ROOT, TINY_PARAMS, make_project, run, venv_env

pytestmark = pytest.mark.integration


def flow_env(root: Path, tmp: Path) -> dict[str, str]:
    env = venv_env(root)
    env.update(PREFECT_HOME=str(tmp / "prefect"), PREFECT_LOCAL_STORAGE_PATH=str(tmp / "prefect" / "storage"),
               PYTHONPATH=str(ROOT))
    env.pop("PREFECT_API_URL", None)
    return env


def run_flow(root: Path, tmp: Path, *extra: str, check: bool = True):
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "flows.pipeline", "--root", str(root), *extra], cwd=ROOT,
                          env=flow_env(root, tmp), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"flow failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def test_stage_order_comes_from_dvc():
    from flows.pipeline import stage_order

    order = stage_order(ROOT)
    assert order.index("prepare") < order.index("train_vqvae")
    with pytest.raises(FileNotFoundError, match="no DVC pipeline here"):
        stage_order(ROOT / "tests")


def test_flow_runs_every_stage_through_dvc_and_tracks_it(tmp_path):
    import mlflow

    root = make_project(tmp_path / "project", TINY_PARAMS)
    proc = run_flow(root, tmp_path)
    logs = proc.stdout + proc.stderr
    assert "Running stage 'prepare'" in logs and "Running stage 'train_vqvae'" in logs
    assert json.loads((root / "metrics/train_vqvae.json").read_text())["psnr"] > 0

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("scalewise-test").experiment_id])
    parent = [r for r in runs if r.data.tags.get("scalewise.orchestrator") == "prefect"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    stages = {r.data.tags["scalewise.stage"] for r in runs
              if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id}
    assert stages == {"prepare", "train_vqvae", "train@var", "train@srdd"}
    assert "metrics.md" in {a.path for a in client.list_artifacts(parent[0].info.run_id)}

    # Second run: DVC owns caching, nothing re-runs.
    again = run_flow(root, tmp_path)
    logs = again.stdout + again.stderr
    assert "didn't change, skipping" in logs and "Running stage" not in logs
    status = run([sys.executable, "-m", "dvc", "status", "--json"], root).stdout
    assert json.loads(status) == {}


def test_failing_stage_fails_the_flow_and_names_the_stage(tmp_path):
    root = tmp_path / "broken"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump({"tracking": {"enabled": False},
                                                       "pipeline": {"retries": 0}}))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "ok": {"cmd": "python3 -c \"open('a.txt','w').write('a')\"", "outs": ["a.txt"]},
        "boom": {"cmd": "python3 -c \"import sys; print('exploding'); sys.exit(3)\"", "deps": ["a.txt"],
                 "outs": ["b.txt"]},
    }}))
    run(["git", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    proc = run_flow(root, tmp_path, check=False)
    assert proc.returncode != 0
    assert "stage 'boom' failed" in proc.stdout + proc.stderr
    assert (root / "a.txt").exists()


def test_deployment_settings_validate_the_cron():
    from flows.deploy import deployment_settings
    from scalewise.config import ConfigError

    good = deployment_settings({"pipeline": {"cron": "*/15 * * * *", "work_pool": "gpu"}}, ROOT)
    assert good["cron"] == "*/15 * * * *" and good["work_pool"] == "gpu"
    assert good["parameters"] == {"root": str(ROOT)}
    with pytest.raises(ConfigError, match="pipeline.cron='every day'"):
        deployment_settings({"pipeline": {"cron": "every day"}}, ROOT)
