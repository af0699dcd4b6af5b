"""The `scalewise` command line and the small I/O guarantees it relies on."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from scalewise.io import atomic_path, load_torch, save_torch
from swtest import ROOT


def scalewise(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scalewise.cli", *args], cwd=ROOT, capture_output=True, text=True)


def test_help_lists_the_subcommands():
    out = scalewise("--help")
    assert out.returncode == 0
    for command in ("repro", "stage", "stages"):
        assert command in out.stdout


def test_unknown_stage_is_a_clear_error():
    out = scalewise("stage", "nope")
    assert out.returncode == 2 and "unknown stage 'nope'" in out.stderr and "train_vqvae" in out.stderr


def test_stages_lists_dvc_stages_in_order():
    out = scalewise("stages")
    names = out.stdout.split()
    assert out.returncode == 0 and names.index("prepare") < names.index("train_vqvae")


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
