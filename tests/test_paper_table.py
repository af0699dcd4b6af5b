"""The paper-table flow end to end on a tiny profile: real DVC, MLflow, Prefect and torch-fidelity.

One temp project (digits, tiny models) runs ``python -m flows.paper_table`` from scratch: every
stage, then the tables. The tests check the table files, the evaluation metrics' shape, the
MLflow runs, re-run determinism and the command line's errors.
"""

from __future__ import annotations

import csv
import json
import math
import sys

import pytest
import yaml

from swtest import TINY_PARAMS, make_project, run

pytestmark = pytest.mark.integration

MODELS = ("var", "srdd", "srdd_distilled")
REQUIRED = ("fid", "isc", "kid", "precision", "recall", "images_per_s", "peak_memory_bytes", "extractor")
TIMING = ("images_per_s", "peak_memory_bytes")


EXPERIMENT = {"drop02": ["train.common.model.cond_drop=0.2"]}  # a training setting that differs: a queued DVC experiment
SEEDS = {"seeds": [0, 1], "seed_overrides": ["evaluate.models=[var,srdd]", "evaluate.sweeps.models=[]"]}  # seed 1: queued


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    prefect_home = tmp_path_factory.mktemp("prefect")
    params = json.loads(json.dumps(TINY_PARAMS))
    params["paper_table"]["experiments"] = EXPERIMENT
    params["paper_table"].update(SEEDS)
    root = make_project(tmp_path_factory.mktemp("tables"), params)
    env_extra = {"PREFECT_HOME": str(prefect_home), "PREFECT_LOCAL_STORAGE_PATH": str(prefect_home / "storage")}
    proc = run([sys.executable, "-m", "flows.paper_table", "--root", str(root), "--run-name", "paper-table/test"],
               root, env_extra=env_extra)
    return root, proc


def test_tables_have_every_row_and_column_with_real_numbers(project):
    root, _ = project
    md = (root / "reports/paper_tables.md").read_text()
    for key in ("## T1: Generation", "## T2: Masked-resampling sweep", "## T3: CFG sweep", "## T4: Inverse problems",
                "## T5: Efficiency", "## T7: Learned sampling heads"):
        assert key in md
    studies = (root / "reports/paper_studies.md").read_text()  # paper/dvc.yaml: report_studies
    for key in ("## T4b: Posterior sampling frontier", "## T4c: Posterior sampling against its goals",
                "## T4d: SRDD with measurement-aware resampling vs VAR guided", "## T8: Scale distillation frontier"):
        assert key in studies and key not in md
    for row in ("| VAR |", "| SRDD |", "| SRDD + simple resampling |", "| SRDD + masked resampling |",
                "| SRDD + MR + tuned CFG |", "| SRDD distilled |"):
        assert row in md
    assert "extractor: scalewise-evaluator" in md and "git commit:" in md and "dataset: digits" in md
    rows = list(csv.DictReader((root / "reports/paper_tables.csv").open()))
    t1 = [r for r in rows if r["table"] == "T1"]
    assert len({r["row"] for r in t1}) == 6
    assert {r["column"] for r in t1} >= {"FID", "IS", "KID", "precision", "recall", "steps", "img/s", "peak MiB"}
    for r in rows + list(csv.DictReader((root / "reports/paper_studies.csv").open())):
        if r["column"] in ("FID", "IS", "KID", "PSNR (dB)", "SSIM", "img/s"):
            assert math.isfinite(float(r["value"])), r
    t2 = {(r["row"]) for r in rows if r["table"] == "T2"}
    assert len(t2) == 2  # threshold 0.1 x iterations 1, 2
    t4_methods = {r["value"] for r in rows if r["table"] == "T4" and r["column"] == "method"}
    assert t4_methods == {"prior", "classical", "clamp", "guided", "guided_mean", "guided+dc", "clamp+guided", "oracle"}
    assert (root / "reports/paper_tables.tex").read_text().count("\\begin{table}") == 6
    assert (root / "reports/paper_studies.tex").read_text().count("\\begin{table}") == 4
    for plot in ("t2_masked_sweep.png", "t3_cfg_sweep.png", "t7_fid_vs_time.png"):
        assert (root / "reports/paper_tables" / plot).stat().st_size > 0
    for plot in ("t4b_posterior_frontier.png", "t8_distill_frontier.png"):
        assert (root / "reports/paper_studies" / plot).stat().st_size > 0
    frontier = json.loads((root / "metrics/distill_frontier.json").read_text())
    assert frontier["chosen"] == "drop1" and frontier["students"]["drop1"]["patch_nums"] == [1, 3, 4]


def test_training_seeds_are_queued_experiments_with_mean_and_spread(project):
    root, proc = project
    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], root).stdout)
    revs = {r["name"]: r for rev in shown for e in (rev.get("experiments") or []) for r in e["revs"]}
    p = revs["seed1"]["data"]["params"]["params.yaml"]["data"]
    assert p["train"]["common"]["seed"] == p["distill"]["seed"] == p["train_heads"]["seed"] == 1
    assert p["train_tokenizer"]["seed"] == 0 and p["evaluate"]["seed"] == 0  # held fixed
    workspace = yaml.safe_load((root / "params.yaml").read_text())
    assert workspace["train"]["common"]["seed"] == 0  # untouched
    md = (root / "reports/paper_seeds.md").read_text()
    assert "## T9: Over 2 training seeds" in md and "## T9b: Claims over 2 training seeds" in md
    assert "reports/paper_seeds.md" in proc.stdout  # the flow published it with the other table files
    rows = list(csv.DictReader((root / "reports/paper_seeds.csv").open()))
    cells = {(r["row"], r["column"]): r["value"] for r in rows if r["table"] == "T9"}  # long format: row = index
    t9 = {cells[(i, "row")]: {"value": cells[(i, "FID per seed")]} for i, c in cells if c == "row"}
    assert {"VAR", "SRDD", "SRDD + policy + tau / CFG", "teacher (SRDD)", "student drop1"} <= set(t9)
    for label in ("VAR", "SRDD"):  # another training seed trains another model
        fid0, fid1 = (float(v) for v in t9[label]["value"].split(" / "))
        assert fid0 != fid1
        assert fid0 == pytest.approx(json.loads((root / f"metrics/evaluate/{label.lower()}.json").read_text())
                                     ["default"]["fid"], abs=5e-4)  # seed 0 is the workspace's run
    verdicts = {r["value"] for r in rows if r["table"] == "T9b" and r["column"] == "verdict"}
    assert verdicts <= {"a better", "b better", "within spread"} and verdicts


def test_experiments_rerun_only_the_stages_their_overrides_change(project):
    """The tokenizer's settings are held, so no experiment retrains it (its resume scratch in
    ``state/`` is not a DVC output, so the experiment's temporary workspace lacks nothing)."""
    import mlflow

    root, _ = project
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    names = {r.info.run_name for e in client.search_experiments()
             for r in client.search_runs([e.experiment_id], max_results=1000)}
    for exp in ("seed1", "drop02"):
        assert f"{exp}/train@var" in names  # the seed / cond_drop override retrains the transformer
        assert f"{exp}/train_tokenizer" not in names and f"{exp}/prepare" not in names


def test_experiments_with_other_training_settings_are_queued_and_compared(project):
    root, _ = project
    md = (root / "reports/paper_experiments.md").read_text()
    assert "## T6: Experiments" in md
    for model in MODELS:
        assert f"| drop02 | train.common.model.cond_drop=0.2 | {model} |" in md
    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], root).stdout)
    names = [r["name"] for rev in shown for e in (rev.get("experiments") or []) for r in e["revs"]]
    assert sorted(names) == ["drop02", "seed1"]
    exp_params = [r["data"]["params"]["params.yaml"]["data"] for rev in shown for e in (rev.get("experiments") or [])
                  for r in e["revs"] if r["name"] == "drop02"][0]
    assert exp_params["train"]["common"]["model"]["cond_drop"] == 0.2
    assert yaml.safe_load((root / "params.yaml").read_text())["train"]["common"]["model"]["cond_drop"] == 0.1  # untouched


def test_evaluate_metrics_have_the_documented_shape(project):
    root, _ = project
    metrics = json.loads((root / "metrics/evaluate.json").read_text())
    assert set(metrics) == set(MODELS)
    for model in MODELS:
        assert {"default", "simple", "masked"} <= set(metrics[model])
        for setting, m in metrics[model].items():
            assert set(REQUIRED) <= set(m), (model, setting)
            assert m["extractor"] == "scalewise-evaluator" and m["fid"] >= 0 and m["isc"] >= 1
            assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and m["images_per_s"] > 0
    srdd = metrics["srdd"]
    assert {"cfg0", "cfg1.5", "masked_t0.1_n1", "masked_t0.1_n2", "top_k5", "top_p0.9",
            "masked_tuned_cfg"} <= set(srdd)
    assert "cfg0" not in metrics["var"]  # sweeps run on evaluate.sweeps.models only
    assert metrics["srdd"]["default"]["cache_bytes"] == 0 and metrics["var"]["default"]["cache_bytes"] > 0
    assert metrics["srdd_distilled"]["default"]["steps"] == 3 and metrics["srdd"]["default"]["steps"] == 4
    n_png = len(list((root / "reports/evaluate/srdd/default").glob("*.png")))
    assert n_png == 10 * 4  # every sample of a non-sweep setting as PNG
    from scalewise.evaluation.plan import folder_name

    for model in MODELS:  # one grid per evaluated setting: none overwrites another ("cfg1.5" vs "cfg1")
        grids = sorted(p.name for p in (root / "reports/evaluate" / model).glob("*.png"))
        own = json.loads((root / f"metrics/evaluate/{model}.json").read_text())  # evaluate@<model>'s settings
        assert grids == sorted(f"{folder_name(s)}.png" for s in own), model
    recon = json.loads((root / "metrics/evaluate_reconstruct.json").read_text())
    assert recon["srdd"]["sr_x4"]["guided"]["fid"] >= 0 and "psnr" in recon["var"]["box_inpaint"]["prior"]


def test_mlflow_holds_the_paper_table_run_with_every_stage(project):
    import mlflow

    root, _ = project
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("scalewise-test")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("scalewise.kind") == "pipeline"]
    assert parent.info.run_name == "paper-table/test" and parent.info.status == "FINISHED"
    assert "paper_tables" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = {r.data.tags["scalewise.stage"]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert {"train_evaluator", "distill", "evaluate@var", "evaluate@srdd", "evaluate@srdd_distilled",
            "evaluate_reconstruct", "report", "posterior_frontier", "restore_cost", "distill_frontier",
            "report_studies"} <= set(children)
    exp_runs = [r for r in runs if r.data.tags.get("scalewise.dvc_experiment") == "drop02"]
    assert "drop02/evaluate@srdd" in {r.info.run_name for r in exp_runs}  # the experiment's stages, named by it
    ev = children["evaluate@srdd"]
    # the same metric keys for every model: runs compare side by side in the MLflow UI
    assert {"default/fid", "default/isc", "masked/fid", "default/images_per_s"} <= set(ev.data.metrics)
    assert {"default/fid", "masked/fid"} <= set(children["evaluate@var"].data.metrics)
    assert ev.data.tags["scalewise.extractor"] == "scalewise-evaluator"
    assert {"t1/var/default/fid", "t1/srdd/masked_tuned_cfg/fid", "t1/srdd_distilled/default/images_per_s"} \
        <= set(children["report"].data.metrics)


def test_same_params_and_seed_give_identical_metrics(project):
    root, _ = project
    before = json.loads((root / "metrics/evaluate/srdd.json").read_text())
    run([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "evaluate@srdd"], root)
    after = json.loads((root / "metrics/evaluate/srdd.json").read_text())
    strip = lambda d: {s: {k: v for k, v in m.items() if k not in TIMING} for s, m in d.items()}  # noqa: E731
    assert strip(after) == strip(before)


def test_paper_table_command_prints_the_selected_tables_and_names_bad_ones(project):
    root, _ = project
    proc = run([sys.executable, "-m", "scalewise.cli.main", "paper-table", "--no-repro", "--tables", "T1,t4"], root)
    assert "## T1: Generation" in proc.stdout and "## T4: Inverse problems" in proc.stdout
    assert "## T2" not in proc.stdout and "## T6" not in proc.stdout
    t6 = run([sys.executable, "-m", "scalewise.cli.main", "paper-table", "--no-repro", "--tables", "T6"], root)
    assert "## T6: Experiments" in t6.stdout and "| drop02 |" in t6.stdout
    t9 = run([sys.executable, "-m", "scalewise.cli.main", "paper-table", "--no-repro", "--tables", "T9b,T8"], root)
    assert "## T9b: Claims" in t9.stdout and "## T8: Scale distillation" in t9.stdout and "## T9:" not in t9.stdout
    bad = run([sys.executable, "-m", "scalewise.cli.main", "paper-table", "--tables", "T1,T10"], root, check=False)
    assert bad.returncode == 2 and "unknown table name(s) ['T10']" in bad.stderr


def test_missing_inception_weights_are_a_clear_error(project, tmp_path):
    root, _ = project
    params = json.loads(json.dumps(TINY_PARAMS))
    params["tracking"]["enabled"] = False
    params["paper_table"]["experiments"] = EXPERIMENT
    params["evaluate"]["inception_weights"] = str(tmp_path / "nope.pth")
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    proc = run([sys.executable, "-m", "stages.evaluate", "--model", "srdd", "--params", str(bad)], root, check=False)
    assert proc.returncode == 2 and "nope.pth" in proc.stderr and "Traceback" not in proc.stderr
