"""The `scalewise` command line and the small I/O guarantees it relies on."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from scalewise.core.io import atomic_path, load_torch, save_torch
from swtest import ROOT


def scalewise(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scalewise.cli.main", *args], cwd=ROOT, capture_output=True, text=True)


def test_help_lists_the_subcommands():
    out = scalewise("--help")
    assert out.returncode == 0
    for command in ("repro", "stage", "stages"):
        assert command in out.stdout


def test_unknown_stage_is_a_clear_error():
    out = scalewise("stage", "nope")
    assert out.returncode == 2 and "unknown stage 'nope'" in out.stderr and "train_tokenizer" in out.stderr


def test_repro_and_stage_pass_their_options_on():
    from scalewise.cli.main import parse

    args = parse(["repro", "--force", "-s", "train@var"])
    assert args.command == "repro" and args.rest == ["--force", "-s", "train@var"]
    for flags in (["-f"], ["--dry"], ["-f", "--dry"]):  # DVC's flags without a target pass on too
        assert parse(["repro", *flags]).rest == flags
    args = parse(["stage", "degrade", "--params", "p.yaml"])
    assert (args.name, args.rest) == ("degrade", ["--params", "p.yaml"])
    out = scalewise("stage", "prepare", "--help")  # the stage's own help, not the CLI's
    assert out.returncode == 0 and "--params" in out.stdout and "prepare.source" in out.stdout


def test_stages_lists_dvc_stages_in_order():
    out = scalewise("stages")
    names = out.stdout.split()
    assert out.returncode == 0 and names.index("prepare") < names.index("train_tokenizer")


def test_atomic_path_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_truncated_or_unsafe_checkpoints_are_clear_errors(tmp_path):
    path = save_torch(tmp_path / "ok.pt", {"w": torch.ones(3)})
    assert torch.equal(load_torch(path)["w"], torch.ones(3))
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="cut.pt: cannot be loaded"):
        load_torch(tmp_path / "cut.pt")
    torch.save({"f": lambda_free_object()}, tmp_path / "pickle.pt")
    with pytest.raises(ValueError, match="not weights-only"):
        load_torch(tmp_path / "pickle.pt")
    with pytest.raises(FileNotFoundError, match="run the stage that produces it"):
        load_torch(tmp_path / "missing.pt")


class _Custom:
    pass


def lambda_free_object() -> _Custom:
    return _Custom()


@pytest.mark.integration
def test_sample_and_bench_commands(tmp_path):
    import json

    from scalewise.models.checkpoints import save_model
    from scalewise.models.tokenizer import Tokenizer, TokenizerConfig
    from scalewise.models.transformer import ScaleTransformer, TransformerConfig
    from swtest import TINY_MODEL

    tok = Tokenizer(TokenizerConfig(**TINY_MODEL))
    model = ScaleTransformer(TransformerConfig(depth=1, width=32, heads=2, vocab_size=64, cvae=8,
                                               patch_nums=[1, 2, 3, 4], num_classes=3, masked_objective=True))
    save_model(tmp_path / "tok.pt", tok)
    save_model(tmp_path / "var.pt", model)
    out = scalewise("sample", "--model", str(tmp_path / "var.pt"), "--tokenizer", str(tmp_path / "tok.pt"),
                    "--classes", "0,2", "--per-class", "2", "--resample", "masked", "--out", str(tmp_path / "g.png"),
                    "--folder", str(tmp_path / "pngs"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "g.png").exists() and len(list((tmp_path / "pngs").glob("*.png"))) == 4
    bad = scalewise("sample", "--model", str(tmp_path / "var.pt"), "--tokenizer", str(tmp_path / "tok.pt"),
                    "--classes", "5")
    assert bad.returncode == 2 and "--classes 5: out of range, the model has 3 classes (0..2)" in bad.stderr
    swapped = scalewise("sample", "--model", str(tmp_path / "tok.pt"), "--tokenizer", str(tmp_path / "tok.pt"))
    assert swapped.returncode == 2 and "expected a transformer" in swapped.stderr
    from scalewise.core.digest import weights_hash
    from scalewise.models.checkpoints import save_heads
    from scalewise.models.heads import HeadsConfig, SamplingHeads

    save_heads(tmp_path / "heads.pt", SamplingHeads(HeadsConfig(width=32)), weights_hash(model))
    both = scalewise("sample", "--model", str(tmp_path / "var.pt"), "--tokenizer", str(tmp_path / "tok.pt"),
                     "--per-class", "1", "--infer-mode", "both", "--heads", str(tmp_path / "heads.pt"),
                     "--out", str(tmp_path / "h.png"))
    assert both.returncode == 0 and (tmp_path / "h.png").exists(), both.stderr
    headless = scalewise("sample", "--model", str(tmp_path / "var.pt"), "--tokenizer", str(tmp_path / "tok.pt"),
                         "--infer-mode", "policy")
    assert headless.returncode == 2 and "--infer-mode policy needs the model's sampling heads" in headless.stderr
    unknown = scalewise("sample", "--model", str(tmp_path / "var.pt"), "--infer-mode", "fancy")
    assert unknown.returncode == 2 and "invalid choice: 'fancy'" in unknown.stderr

    out = scalewise("bench", "sample", "--depth", "1", "--width", "32", "--heads", "2", "--image-size", "16",
                    "--downsample", "4", "--patch-nums", "1,2,4", "--vocab", "64", "--cvae", "8",
                    "--tokenizer-ch", "8", "--cfg", "1.5", "--mask-kinds", "causal,markov", "--batch-sizes", "1,2",
                    "--runs", "2", "--json", str(tmp_path / "b.json"))
    assert out.returncode == 0, out.stderr
    records = json.loads((tmp_path / "b.json").read_text())
    assert [(r["mask_kind"], r["batch_size"]) for r in records] == [("causal", 1), ("causal", 2), ("markov", 1), ("markov", 2)]
    for r in records:
        assert {"images_per_s", "ms_per_image", "peak_memory_bytes", "cache_bytes", "per_scale_ms"} <= set(r)
        assert len(r["per_scale_ms"]) == 3 and r["peak_memory_bytes"] > 0
    assert records[2]["cache_bytes"] == 0 < records[0]["cache_bytes"]
    out = scalewise("bench", "train", "--depth", "1", "--width", "32", "--heads", "2", "--image-size", "16",
                    "--downsample", "4", "--patch-nums", "1,2,4", "--vocab", "64", "--cvae", "8",
                    "--mask-kinds", "causal", "--batch-size", "2", "--runs", "2")
    assert out.returncode == 0 and json.loads(out.stdout)[0]["tokens_per_s"] > 0


def test_saved_files_are_byte_identical_for_identical_content(tmp_path):
    a = save_torch(tmp_path / "a.pt", {"w": torch.arange(5)}).read_bytes()
    b = save_torch(tmp_path / "a.pt", {"w": torch.arange(5)}).read_bytes()
    assert a == b, "DVC hashes outputs: the same content must give the same bytes"
