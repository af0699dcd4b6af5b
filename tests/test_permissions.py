"""Outputs get the permissions the umask allows (a shared store or another user can read them)."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from scalewise.core.io import atomic_dir, save_torch, write_json, write_text
from scalewise.data.prepare import PrepareConfig, prepare_dataset, save_prepared


@pytest.fixture(params=[0o022, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_outputs_follow_the_umask(tmp_path, umask):
    files = [write_text(tmp_path / "a.txt", "x"), write_json(tmp_path / "m.json", {"a": 1}),
             save_torch(tmp_path / "w.pt", {"w": torch.ones(2)})]
    assert all(_mode(f) == 0o666 & ~umask for f in files)
    with atomic_dir(tmp_path / "folder") as d:
        (d / "f").write_text("y")
    assert _mode(tmp_path / "folder") == 0o777 & ~umask
    if umask == 0o022:
        assert all(_mode(f) & stat.S_IRGRP and _mode(f) & stat.S_IROTH for f in files)  # group- and world-readable


def test_the_prepared_folder_follows_the_umask(tmp_path, umask):
    cfg = PrepareConfig(source="digits", image_size=8, max_per_class=4)
    out = save_prepared(prepare_dataset(cfg), tmp_path / "prepared", cfg)
    assert _mode(out) == 0o777 & ~umask
    for f in [out / "train.pt", out / "manifest.json", *sorted((out / "test_png").glob("*.png"))[:2]]:
        assert _mode(f) == 0o666 & ~umask, f
