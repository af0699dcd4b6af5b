"""MLflow naming (MiB, artifact names, stage order), the headline numbers, and the model registry
on a real SQLite MLflow store in a temp dir."""

from __future__ import annotations

import pytest
import torch

from scalewise.evaluation.headline import headline
from scalewise.project.tracking import artifact_name, in_mib, stage_order
from swtest import ROOT, TINY_MODEL


def test_memory_is_logged_in_mib_and_artifacts_have_one_name_per_kind():
    assert in_mib("default/peak_memory_bytes", 3 * 2**20) == ("default/peak_memory_mib", 3.0)
    assert in_mib("default/fid", 2.5) == ("default/fid", 2.5)
    assert artifact_name("metrics/evaluate/var.json") == artifact_name("metrics/train_srdd.json") == "metrics.json"
    assert artifact_name("plots/train_var.csv") == "curve.csv"
    assert artifact_name("reports/train/var/samples.png") == "samples.png"


def test_stage_order_follows_the_pipeline_definition():
    order = [stage_order(s, ROOT) for s in ("prepare", "train_tokenizer", "train@var", "reconstruct@srdd-sr_x4",
                                            "evaluate@var", "report", "posterior_frontier", "report_studies")]
    assert order == sorted(order) and len(set(order)) == len(order)
    assert stage_order("train@var", ROOT) == stage_order("train@srdd", ROOT)
    assert stage_order("no_such_stage", ROOT) == 99


def test_headline_takes_each_models_default_setting_and_guided_psnr():
    evaluate = {"var": {"default": {"fid": 3.14159, "isc": 2.0, "precision": 0.5, "recall": 0.25,
                                    "images_per_s": 1234.5678, "kid": 0.1}, "masked": {"fid": 1.0}}}
    recon = {"var": {"sr_x4": {"guided": {"psnr": 21.23456}, "clamp": {"psnr": 15.0}}}}
    out = headline(evaluate, recon)
    assert out == {"var": {"fid": 3.142, "isc": 2.0, "precision": 0.5, "recall": 0.25, "images_per_s": 1235.0,
                           "guided_psnr": {"sr_x4": 21.23}}}
    with pytest.raises(KeyError, match="no 'default' setting"):
        headline({"srdd": {"masked": {"fid": 1.0}}})


def test_register_reuses_a_version_per_weights_and_crowns_the_lowest_fid(tmp_path, monkeypatch):
    import mlflow

    from scalewise.models.checkpoints import save_model
    from scalewise.models.tokenizer import Tokenizer, TokenizerConfig
    from scalewise.models.transformer import ScaleTransformer, TransformerConfig
    from scalewise.api.download import download_sampler
    from scalewise.project.registry import log_sampler, register_evaluated

    torch.manual_seed(0)
    save_model(tmp_path / "tokenizer.pt", Tokenizer(TokenizerConfig(**TINY_MODEL)))
    cfg = TransformerConfig(depth=1, width=32, heads=2, vocab_size=64, cvae=8, patch_nums=[1, 2, 3, 4], num_classes=3)
    for name in ("a", "b"):
        save_model(tmp_path / f"{name}.pt", ScaleTransformer(cfg))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.set_experiment("registry-test").experiment_id
    for name in ("a", "b"):
        with mlflow.start_run():
            log_sampler(tmp_path / f"{name}.pt", tmp_path / "tokenizer.pt")
    client = mlflow.MlflowClient(uri)
    v1 = register_evaluated(client, exp, "srdd", tmp_path / "a.pt", 5.0, "p1")
    assert register_evaluated(client, exp, "srdd", tmp_path / "a.pt", 5.0, "p1").version == v1.version  # same weights
    v2 = register_evaluated(client, exp, "srdd", tmp_path / "b.pt", 7.0, "p1")
    assert v2.version != v1.version
    assert client.get_model_version_by_alias("scalewise-srdd", "champion").version == v1.version  # 5 < 7
    register_evaluated(client, exp, "srdd", tmp_path / "b.pt", 4.0, "p1")  # re-evaluated lower
    assert client.get_model_version_by_alias("scalewise-srdd", "champion").version == v2.version
    register_evaluated(client, exp, "srdd", tmp_path / "a.pt", 1.0, "p2")  # another protocol: not compared with p1
    assert client.get_model_version_by_alias("scalewise-srdd", "champion").version == v1.version
    other = tmp_path / "c.pt"
    save_model(other, ScaleTransformer(cfg))
    assert register_evaluated(client, exp, "srdd", other, 1.0, "p1") is None  # no run logged these weights
    with download_sampler("models:/scalewise-srdd@champion") as files:
        assert files["transformer"].read_bytes() == (tmp_path / "a.pt").read_bytes()
    with pytest.raises(ValueError, match="models:/scalewise-none@champion: cannot be loaded"):
        with download_sampler("models:/scalewise-none@champion"):
            pass
    mlflow.set_tracking_uri(None)
