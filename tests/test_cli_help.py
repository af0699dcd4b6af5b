"""The CLI explains itself: help on every flag, --version, and usage errors that name their flag."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from scalewise import __version__
from scalewise.cli.main import build_parser
from swtest import ROOT


def scalewise(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, from any working directory
    return subprocess.run([sys.executable, "-m", "scalewise.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          env=env)


def _parsers(parser: argparse.ArgumentParser, name: str = "scalewise"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_flag_of_every_command_has_help():
    names = []
    for name, parser in _parsers(build_parser()):
        names.append(name)
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help.strip(), f"`{name}` {action.option_strings or action.dest} has no help"
    for command in ("scalewise sample", "scalewise restore", "scalewise bench sample", "scalewise bench train",
                    "scalewise bench restore", "scalewise paper-table", "scalewise repro"):
        assert command in names  # one sub-parser per bench kind


def test_help_shows_defaults_and_version_prints():
    out = scalewise("sample", "--help")
    assert out.returncode == 0 and "samples per class (default: 4)" in " ".join(out.stdout.split())
    bench = scalewise("bench", "train", "--help")
    assert bench.returncode == 0 and "--batch-size" in bench.stdout and "--tasks" not in bench.stdout
    version = scalewise("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"scalewise {__version__}"


@pytest.mark.parametrize("args,message", [
    (["sample", "--per-class", "0"], "argument --per-class: must be >= 1, got 0"),
    (["sample", "--per-class", "-2"], "argument --per-class: must be >= 1, got -2"),
    (["sample", "--batch-size", "two"], "argument --batch-size: expected an integer, got 'two'"),
    (["sample", "--device", "cuda:64"], "argument --device: device='cuda:64' requested but"),
    (["restore", "--image", "x.png", "--task", "deblur", "--tau", "0"], "argument --tau: must be > 0, got 0"),
    (["restore", "--image", "x.png", "--task", "superres", "--factor", "1"],
     "argument --factor: must be an integer >= 2 (the upscaling factor), got 1"),
    (["restore", "--image", "x.png", "--task", "deblur", "--num-samples", "0"], "argument --num-samples: must be >= 1"),
    (["bench", "restore", "--runs", "0"], "argument --runs: must be >= 1, got 0"),
])
def test_bad_values_are_usage_errors_naming_their_flag(args, message):
    out = scalewise(*args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_missing_model_files_say_where_they_come_from(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text("stages:\n  train:\n    foreach: [var, srdd]\n    do:\n"
                                      "      cmd: echo ${item}\n      outs:\n        - models/${item}.pt\n")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, check=True)
    out = scalewise("sample", "--model", "models/var.pt", cwd=project)
    assert out.returncode == 2 and "--model models/var.pt: no such model file; `dvc repro train@var`" in out.stderr
    assert "Traceback" not in out.stderr
    elsewhere = scalewise("sample", "--model", str(tmp_path / "mine.pt"), cwd=tmp_path)
    assert elsewhere.returncode == 2 and "no pipeline stage writes this path" in elsewhere.stderr
    official = scalewise("restore", "--image", "x.png", "--task", "deblur", "--official-tokenizer", "vae.pth",
                         "--official-var", "var_d16.pth", cwd=tmp_path)
    assert official.returncode == 2 and "--official-tokenizer vae.pth: no such file; download it from the official " \
        "VAR release" in official.stderr


def test_a_decompression_bomb_is_refused_without_a_traceback(tmp_path):
    import torch

    from scalewise.models.checkpoints import save_model
    from scalewise.models.tokenizer import Tokenizer, TokenizerConfig
    from scalewise.models.transformer import ScaleTransformer, TransformerConfig
    from swtest import TINY_MODEL
    from test_restore_cli import bomb_png

    torch.manual_seed(0)
    save_model(tmp_path / "tok.pt", Tokenizer(TokenizerConfig(**TINY_MODEL)))
    save_model(tmp_path / "m.pt", ScaleTransformer(TransformerConfig(depth=1, width=32, heads=2, vocab_size=64, cvae=8,
                                                                     patch_nums=[1, 2, 3, 4], num_classes=3)))
    (tmp_path / "bomb.png").write_bytes(bomb_png(20000, 20000))
    out = scalewise("restore", "--model", str(tmp_path / "m.pt"), "--tokenizer", str(tmp_path / "tok.pt"),
                    "--image", str(tmp_path / "bomb.png"), "--task", "deblur", cwd=tmp_path)
    assert out.returncode == 2 and "bomb.png: refused by Pillow's decompression-bomb guard" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
