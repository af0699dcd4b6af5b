"""The DVC + MLflow spine end to end, on a temp copy of the project with tiny params.

Real DVC, real MLflow (SQLite store in the temp project), real subprocesses; no mocks.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from swtest import ROOT, TINY_PARAMS, make_project, run, venv_env, write_params

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("project"), TINY_PARAMS)
    proc = run([sys.executable, "-m", "scalewise.cli.main", "repro"], root)
    return root, proc


def test_repro_writes_metrics_plots_and_model(project):
    root, _ = project
    metrics = json.loads((root / "metrics/train_tokenizer.json").read_text())
    assert set(metrics) >= {"psnr", "psnr_by_scales", "codebook_usage"}
    assert len(metrics["psnr_by_scales"]) == 4 and metrics["psnr_by_scales"][-1] == metrics["psnr"]
    assert 0 < metrics["codebook_usage"] <= 1
    assert (root / "reports/train_tokenizer/recon_grid.png").stat().st_size > 0
    rows = (root / "plots/train_tokenizer.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 1 + 30 // 5
    shown = json.loads(run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], root).stdout)
    assert "psnr" in json.dumps(shown) and "codebook_usage" in json.dumps(shown)
    manifest = json.loads((root / "data/prepared/manifest.json").read_text())
    assert manifest["num_classes"] == 10
    for variant, kind in (("var", "causal"), ("srdd", "markov")):
        m = json.loads((root / f"metrics/train_{variant}.json").read_text())
        assert m["mask_kind"] == kind and len(m["test_acc_by_scale"]) == 4 and 0 <= m["class_mean_proxy"] <= 1
        assert (root / f"reports/train/{variant}/samples.png").stat().st_size > 0
        assert (root / f"models/{variant}.pt").exists()


def test_repro_degrades_and_reconstructs_every_variant_and_task(project):
    root, _ = project
    manifest = json.loads((root / "data/degraded/manifest.json").read_text())
    assert sorted(manifest["tasks"]) == ["box_inpaint", "sr_x4"] and manifest["sigma_y"] == 0.05
    summary = json.loads((root / "metrics/reconstruct.json").read_text())
    ALL = {"prior", "classical", "clamp", "guided", "guided_mean", "guided+dc", "clamp+guided", "oracle"}
    assert set(summary) == {"var", "srdd"}
    for variant in ("var", "srdd"):
        assert set(summary[variant]) == {"box_inpaint", "sr_x4"}
        for task, methods in summary[variant].items():
            assert set(methods) == ALL  # box and area super-resolution both have guided+dc
            for m in methods.values():
                assert set(m) == {"psnr", "ssim", "consistency", "sec_per_image"}
                assert m["psnr"] > 0 and -1 <= m["ssim"] <= 1 and m["consistency"] >= 0 and m["sec_per_image"] > 0
            folder = root / f"reports/reconstruct/{variant}/{task}"
            assert (folder / "side_by_side.png").stat().st_size > 0
            assert len(list((folder / "clamp_guided").glob("*.png"))) == 10
            assert len((folder / "per_image.csv").read_text().splitlines()) == 1 + len(ALL) * 10
    assert "| sr_x4 | guided |" in (root / "reports/reconstruct_summary.md").read_text()


def test_repro_trains_the_heads_and_evaluates_their_modes_but_leaves_the_studies_to_paper_table(project):
    root, _ = project
    heads = json.loads((root / "metrics/train_heads.json").read_text())
    assert heads["freeze_backbone"] and 0 < heads["head_param_fraction"] <= 0.05
    assert {"tau", "baseline_tau", "cfg", "baseline_cfg", "policy", "baseline_policy"} <= set(heads)
    modes = json.loads((root / "metrics/evaluate_heads.json").read_text())
    assert {n: r["infer_mode"] for n, r in modes.items()} == {"policy": "policy", "guidance": "guidance", "both": "both"}
    assert all({"fid", "recall", "precision", "images_per_s", "steps"} <= set(r) for r in modes.values())
    evaluate = json.loads((root / "metrics/evaluate.json").read_text())
    assert {"default", "masked", "policy", "guidance", "both"} <= set(evaluate["srdd"])
    tables = (root / "reports/paper_tables.md").read_text()
    assert "## T7: Learned sampling heads" in tables and "## T8" not in tables and "## T4b" not in tables
    assert (root / "reports/paper_tables/t7_fid_vs_time.png").stat().st_size > 0
    # the studies (paper/dvc.yaml) are paper-table's: plain `dvc repro` leaves them, and `dvc status` names them
    assert not (root / "metrics/distill_frontier.json").exists() and not (root / "metrics/posterior_frontier.json").exists()
    status = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], root).stdout)
    assert set(status) == {"paper/dvc.yaml:posterior_frontier", "paper/dvc.yaml:restore_cost",
                           "paper/dvc.yaml:distill_frontier", "paper/dvc.yaml:report_studies"}


def test_changing_only_srdd_params_reruns_only_srdd(project):
    root, _ = project
    params = json.loads(json.dumps(TINY_PARAMS))
    params["train"]["srdd"]["mask_kind"] = "markov_prev"
    write_params(root, params)
    status = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], root).stdout)
    assert set(status) - {s for s in status if s.startswith("paper/")} == {"train@srdd"}  # its reconstructions follow
    write_params(root, TINY_PARAMS)


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
    reconstruct = {f"reconstruct@{v}-{t}" for v in ("var", "srdd") for t in ("box_inpaint", "sr_x4")}
    assert set(children) == {"prepare", "train_tokenizer", "train@var", "train@srdd", "degrade",
                             "reconstruct_summary", "train_evaluator", "distill", "evaluate@var", "evaluate@srdd",
                             "evaluate@srdd_distilled", "evaluate_reconstruct",
                             "train_heads", "evaluate_heads", "report"} | reconstruct
    rec = children["reconstruct@srdd-sr_x4"]
    assert rec.data.tags["scalewise.task"] == "sr_x4" and rec.data.params["guidance.grad_steps"] == "1"
    assert {"guided/psnr", "prior/consistency", "clamp_guided/ssim"} <= set(rec.data.metrics)
    assert "side_by_side.png" in {a.path for a in client.list_artifacts(rec.info.run_id)}
    assert children["train@srdd"].data.tags["scalewise.mask_kind"] == "markov"
    assert [m.step for m in client.get_metric_history(children["train@var"].info.run_id, "train/loss")] == [5, 10]
    train = children["train_tokenizer"]
    assert train.data.params["model.patch_nums"] == "[1, 2, 3, 4]" and train.data.params["steps"] == "30"
    assert train.data.tags["scalewise.git_commit"] != "unknown"
    history = client.get_metric_history(train.info.run_id, "train/loss")
    assert [m.step for m in history] == [5, 10, 15, 20, 25, 30]
    assert "test/psnr" in train.data.metrics
    artifacts = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {"recon_grid.png", "metrics.json"} <= artifacts  # one artifact name per kind, for the compare view
    assert children["prepare"].data.params["source"] == "digits"


def _client(root):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    return client, client.get_experiment_by_name("scalewise-test").experiment_id


def test_the_parent_run_summarises_and_stage_runs_sort_and_compare(project):
    root, _ = project
    client, exp = _client(root)
    runs = client.search_runs([exp])
    parent = next(r for r in runs if r.data.tags.get("scalewise.kind") == "pipeline")
    headline = json.loads((root / "metrics/headline.json").read_text())
    assert set(headline) == {"var", "srdd", "srdd_distilled"}
    assert parent.data.metrics["srdd.fid"] == headline["srdd"]["fid"]
    assert parent.data.metrics["var.guided_psnr.sr_x4"] == headline["var"]["guided_psnr"]["sr_x4"]
    assert parent.data.params["prepare.source"] == "digits" and "train.common.steps" in parent.data.params
    assert "**srdd**: fid" in parent.data.tags["mlflow.note.content"]
    children = {r.data.tags["scalewise.stage"]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    order = {s: int(r.data.tags["scalewise.stage_order"]) for s, r in children.items()}
    assert order["prepare"] < order["train_tokenizer"] < order["train@var"] == order["train@srdd"] \
        < order["reconstruct@var-sr_x4"] < order["report"]
    ev = children["evaluate@srdd"].data.metrics
    assert ev["_headline/fid"] == ev["default/fid"] and "_headline/peak_memory_mib" in ev
    assert not any(k.endswith("_bytes") for k in ev)  # memory in MiB
    assert {k.split("/")[1] for k in ev if k.startswith("sweep/")} >= {"cfg0", "cfg1.5", "top_k5"}
    assert not any(k.startswith(("cfg0/", "top_k5/")) for k in ev)  # sweeps only under sweep/
    # one spelling per setting: DVC JSON key = grid file name = MLflow prefix
    srdd = json.loads((root / "metrics/evaluate/srdd.json").read_text())
    assert set(srdd) == {p.stem for p in (root / "reports/evaluate/srdd").glob("*.png")}
    logged = {k.split("/")[1] if k.startswith("sweep/") else k.split("/")[0] for k in ev if not k.startswith("_")}
    assert logged == set(srdd) and {"masked_t0.1_n1", "cfg1.5", "masked_tuned_cfg"} <= logged
    for stage in ("evaluate@var", "evaluate@srdd", "train@var", "train@srdd"):
        assert "metrics.json" in {a.path for a in client.list_artifacts(children[stage].info.run_id)}
    acc = {k for k in children["train@var"].data.metrics if k.startswith("test/acc_scale_")}
    assert acc == {f"test/acc_scale_{k}" for k in range(1, 5)}  # scales are metrics, not steps


def test_dvc_metrics_show_lists_only_the_headline_numbers(project):
    root, _ = project
    shown = json.loads(run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], root).stdout)
    files = {f: d["data"] for entry in shown for f, d in entry["data"]["metrics"].items()} \
        if isinstance(shown, list) else {f: d["data"] for f, d in shown[""]["data"].items()}
    assert "metrics/headline.json" in files and "metrics/evaluate.json" not in files
    from scalewise.core.config import flatten

    columns = set().union(*(flatten(d) for d in files.values()))
    assert len(columns) < 150, sorted(columns)
    text = run([sys.executable, "-m", "dvc", "metrics", "show"], root).stdout
    assert "srdd.fid" in text


def test_the_readmes_exp_show_view_fits_in_200_columns(project):
    import re
    import shlex

    root, _ = project
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("dvc exp show --no-pager --drop"))
    out = run([sys.executable, "-m", *shlex.split(command)], root, env_extra={"COLUMNS": "200"}).stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 200 and "…" not in out, out
    assert re.search(r"srdd\.fid", out) and re.search(r"workspace\s+\d", out)


def test_report_registers_every_model_with_a_champion_that_samples(project, tmp_path):
    root, _ = project
    client, _ = _client(root)
    headline = json.loads((root / "metrics/headline.json").read_text())
    for model in ("var", "srdd", "srdd_distilled"):
        champion = client.get_model_version_by_alias(f"scalewise-{model}", "champion")
        versions = client.search_model_versions(f"name = 'scalewise-{model}'")
        assert float(champion.tags["fid"]) == pytest.approx(headline[model]["fid"], rel=1e-4)
        assert float(champion.tags["fid"]) == min(float(v.tags["fid"]) for v in versions)
    out = tmp_path / "g.png"
    run([sys.executable, "-m", "scalewise.cli.main", "sample", "--model", "models:/scalewise-srdd@champion",
         "--classes", "1,2", "--per-class", "2", "--out", str(out)], root)
    assert out.stat().st_size > 0
    import mlflow
    import pandas as pd

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    try:
        images = mlflow.pyfunc.load_model("models:/scalewise-var@champion").predict(
            pd.DataFrame({"class_label": [0, 3], "seed": [0, 0]}))
    finally:
        mlflow.set_tracking_uri(previous)
    assert images.shape == (2, 16, 16, 1) and images.dtype.name == "uint8" and images.std() > 0
    bad = run([sys.executable, "-m", "scalewise.cli.main", "sample", "--model", "models:/scalewise-nope@champion"],
              root, check=False)
    assert bad.returncode == 2 and "models:/scalewise-nope@champion" in bad.stderr and "Traceback" not in bad.stderr


def test_changing_a_train_param_reruns_only_that_stage(project, tmp_path):
    root, _ = project
    params = json.loads(json.dumps(TINY_PARAMS))
    params["train_tokenizer"]["steps"] = 20
    params["tracking"]["enabled"] = False  # stages must also run with tracking off
    write_params(root, params)
    status = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], root).stdout)
    # descendants re-run once its outputs change; the paper studies stay pending as before:
    assert {s for s in status if not s.startswith("paper/")} == {"train_tokenizer"}
    out = run([sys.executable, "-m", "dvc", "repro"], root).stdout
    assert "Stage 'prepare' didn't change" in out and "Running stage 'train_tokenizer'" in out
    assert "Running stage 'train@srdd'" in out
    metrics = json.loads((root / "metrics/train_tokenizer.json").read_text())
    assert metrics["steps"] == 20
    write_params(root, TINY_PARAMS)


def test_killed_train_tokenizer_resumes_to_the_same_model_and_curve(tmp_path):
    """SIGKILL mid-run, then resume: the model and the logged curve equal an uninterrupted run's
    bit for bit (checkpoints every 7 steps, logs every 5: the kill lands between log points)."""
    import torch

    root = make_project(tmp_path, TINY_PARAMS)
    params = json.loads(json.dumps(TINY_PARAMS))
    params["tracking"]["enabled"] = False
    params["train_tokenizer"].update(steps=150, ckpt_every=7)
    write_params(root, params)
    run([sys.executable, "-m", "stages.prepare"], root)
    run([sys.executable, "-m", "stages.train_tokenizer", "--state", "ref/state", "--model-out", "ref/tokenizer.pt",
         "--reports", "ref/reports", "--metrics", "ref/metrics.json", "--plot", "ref/curve.csv"], root)
    ckpt = root / "state/train_tokenizer/last.pt"
    proc = subprocess.Popen([sys.executable, "-m", "stages.train_tokenizer"], cwd=root, env=venv_env(root),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint was written before the kill"
    assert not (root / "models/tokenizer.pt").exists()
    out = run([sys.executable, "-m", "stages.train_tokenizer"], root).stdout
    assert "resumed from step" in out
    step = int(out.split("resumed from step ")[1].split()[0])
    assert 7 <= step < 150 and step % 7 == 0
    ours = torch.load(root / "models/tokenizer.pt", weights_only=True)["state_dict"]
    ref = torch.load(root / "ref/tokenizer.pt", weights_only=True)["state_dict"]
    assert list(ours) == list(ref) and all(torch.equal(ours[k], ref[k]) for k in ref)
    assert (root / "plots/train_tokenizer.csv").read_text() == (root / "ref/curve.csv").read_text()
    assert json.loads((root / "metrics/train_tokenizer.json").read_text()) == json.loads(
        (root / "ref/metrics.json").read_text())


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
            params["train_tokenizer"][key].update(value)
        else:
            params["train_tokenizer"][key] = value
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    proc = run([sys.executable, "-m", "stages.train_tokenizer", "--params", str(bad), "--state", str(tmp_path / "s"),
                "--model-out", str(tmp_path / "m.pt")], root, check=False)
    assert proc.returncode == 2 and re.search(message, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr


def test_image_size_not_divisible_by_downsample_is_a_clear_error(tmp_path):
    params = json.loads(json.dumps(TINY_PARAMS))
    params["tracking"]["enabled"] = False
    params["prepare"]["image_size"] = 18
    root = make_project(tmp_path, params)
    run([sys.executable, "-m", "stages.prepare"], root)
    proc = run([sys.executable, "-m", "stages.train_tokenizer"], root, check=False)
    assert proc.returncode == 2 and "image_size=18 is not divisible by downsample=4" in proc.stderr
