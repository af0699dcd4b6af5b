"""The DVC + MLflow spine end to end, on a temp copy of the project with tiny params.

Real DVC, real MLflow (SQLite store in the temp project), real subprocesses; no mocks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from swtest import ROOT

pytestmark = pytest.mark.integration

TINY_PARAMS = {
    "tracking": {"enabled": True, "experiment": "scalewise-test"},
    "prepare": {"source": "digits", "image_size": 16, "channels": 1, "test_fraction": 0.1,
                "split_seed": 0, "max_per_class": 60},
    "train_vqvae": {
        "model": {"ch": 8, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "downsample": 4, "vocab_size": 64,
                  "cvae": 8, "patch_nums": [1, 2, 3, 4], "quant_resi": 0.5, "share_quant_resi": 2,
                  "beta": 0.25, "use_attn": False},
        "steps": 30, "batch_size": 16, "lr": 0.003, "weight_decay": 0.0, "warmup_steps": 5,
        "dead_code_every": 10, "dead_code_min_usage": 0.5, "log_every": 5, "ckpt_every": 10,
        "seed": 0, "device": "cpu",
    },
    "pipeline": {"cron": "0 3 * * *", "work_pool": "scalewise-test", "retries": 0},
}


def venv_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("SCALEWISE_PARENT_RUN_ID", None)
    env["PYTHONPATH"] = str(root)
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=venv_env(cwd), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_params(root: Path, params: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(dest: Path, params: dict) -> Path:
    """A git + DVC repository holding a copy of the pipeline code and ``params``."""
    for name in ("dvc.yaml", "scalewise", "stages", "flows"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    write_params(dest, params)
    (dest / ".gitignore").write_text("mlflow.db\nmlruns/\n__pycache__/\n")
    run(["git", "init", "-q"], dest)
    run([sys.executable, "-m", "dvc", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "init"], dest)
    return dest


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("project"), TINY_PARAMS)
    proc = run([sys.executable, "-m", "scalewise.cli", "repro"], root)
    return root, proc


def test_repro_writes_metrics_plots_and_model(project):
    root, _ = project
    metrics = json.loads((root / "metrics/train_vqvae.json").read_text())
    assert set(metrics) >= {"psnr", "psnr_by_scales", "codebook_usage"}
    assert len(metrics["psnr_by_scales"]) == 4 and metrics["psnr_by_scales"][-1] == metrics["psnr"]
    assert 0 < metrics["codebook_usage"] <= 1
    assert (root / "reports/train_vqvae/recon_grid.png").stat().st_size > 0
    rows = (root / "plots/train_vqvae.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 1 + 30 // 5
    shown = json.loads(run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], root).stdout)
    assert "psnr" in json.dumps(shown) and "codebook_usage" in json.dumps(shown)
    manifest = json.loads((root / "data/prepared/manifest.json").read_text())
    assert manifest["num_classes"] == 10


def test_mlflow_holds_a_parent_run_with_a_nested_run_per_stage(project):
    import mlflow

    root, _ = project
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("scalewise-test")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("scalewise.kind") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = {r.data.tags["scalewise.stage"]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert set(children) == {"prepare", "train_vqvae"}
    train = children["train_vqvae"]
    assert train.data.params["model.patch_nums"] == "[1, 2, 3, 4]" and train.data.params["steps"] == "30"
    assert train.data.tags["scalewise.git_commit"] != "unknown"
    history = client.get_metric_history(train.info.run_id, "train/loss")
    assert [m.step for m in history] == [5, 10, 15, 20, 25, 30]
    assert "test/psnr" in train.data.metrics
    artifacts = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {"recon_grid.png", "train_vqvae.json"} <= artifacts
    assert children["prepare"].data.params["source"] == "digits"


def test_changing_a_train_param_reruns_only_that_stage(project, tmp_path):
    root, _ = project
    params = json.loads(json.dumps(TINY_PARAMS))
    params["train_vqvae"]["steps"] = 20
    params["tracking"]["enabled"] = False  # stages must also run with tracking off
    write_params(root, params)
    status = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], root).stdout)
    assert set(status) == {"train_vqvae"}
    out = run([sys.executable, "-m", "dvc", "repro"], root).stdout
    assert "Stage 'prepare' didn't change" in out and "Running stage 'train_vqvae'" in out
    metrics = json.loads((root / "metrics/train_vqvae.json").read_text())
    assert metrics["steps"] == 20
    write_params(root, TINY_PARAMS)


def test_killed_train_vqvae_resumes_from_its_checkpoint(tmp_path):
    root = make_project(tmp_path, TINY_PARAMS)
    params = json.loads(json.dumps(TINY_PARAMS))
    params["tracking"]["enabled"] = False
    params["train_vqvae"].update(steps=150, ckpt_every=10)
    write_params(root, params)
    run([sys.executable, "-m", "stages.prepare"], root)
    ckpt = root / "state/train_vqvae/last.pt"
    proc = subprocess.Popen([sys.executable, "-m", "stages.train_vqvae"], cwd=root, env=venv_env(root),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint was written before the kill"
    assert not (root / "models/tokenizer.pt").exists()
    out = run([sys.executable, "-m", "stages.train_vqvae"], root).stdout
    assert "resumed from step" in out
    step = int(out.split("resumed from step ")[1].split()[0])
    assert 10 <= step < 150 and step % 10 == 0
    assert (root / "models/tokenizer.pt").exists()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"model": {"patch_nums": [1, 2, 3, 5]}}, "patch_nums=\\[1, 2, 3, 5\\] must end at the latent size"),
        ({"model": {"downsample": 8}}, "downsample=8 does not match ch_mult"),
        ({"stepz": 4}, "unknown parameter.*stepz"),
    ],
)
def test_bad_train_params_fail_with_a_clear_error(project, tmp_path, change, message):
    import re

    root, _ = project
    params = json.loads(json.dumps(TINY_PARAMS))
    params["tracking"]["enabled"] = False
    for key, value in change.items():
        if isinstance(value, dict):
            params["train_vqvae"][key].update(value)
        else:
            params["train_vqvae"][key] = value
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    proc = run([sys.executable, "-m", "stages.train_vqvae", "--params", str(bad), "--state", str(tmp_path / "s"),
                "--model-out", str(tmp_path / "m.pt")], root, check=False)
    assert proc.returncode == 2 and re.search(message, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr


def test_image_size_not_divisible_by_downsample_is_a_clear_error(tmp_path):
    params = json.loads(json.dumps(TINY_PARAMS))
    params["tracking"]["enabled"] = False
    params["prepare"]["image_size"] = 18
    root = make_project(tmp_path, params)
    run([sys.executable, "-m", "stages.prepare"], root)
    proc = run([sys.executable, "-m", "stages.train_vqvae"], root, check=False)
    assert proc.returncode == 2 and "image_size=18 is not divisible by downsample=4" in proc.stderr
