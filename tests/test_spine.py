"""The DVC spine of the transformers with real DVC on a temp project: train.srdd.init_from is a
dependency that orders train@var first and re-runs train@srdd when models/var.pt changes, and a
re-run retrains only when the weights it starts from changed."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from scalewise.core.io import save_torch
from swtest import TINY_PARAMS, make_project, run, write_params

pytestmark = pytest.mark.integration


def dvc(root, *args: str) -> str:
    return run([sys.executable, "-m", "dvc", *args], root).stdout


def change_var_weights(root) -> None:
    """A new models/var.pt: the same file with other weights (as if train@var had re-run)."""
    obj = torch.load(root / "models/var.pt", weights_only=True)
    obj["state_dict"]["head.weight"] += 0.01
    save_torch(root / "models/var.pt", obj)


def test_init_from_orders_and_invalidates_train_srdd(tmp_path):
    params = json.loads(json.dumps(TINY_PARAMS))
    params["tracking"]["enabled"] = False
    root = make_project(tmp_path, params)  # init_from: null (the default)
    assert '"train@var" -> "train@srdd"' in dvc(root, "dag", "--dot", "train@srdd")
    out = dvc(root, "repro", "train@srdd")
    assert out.index("Running stage 'train@var'") < out.index("Running stage 'train@srdd'")
    srdd = (root / "models/srdd.pt").read_bytes()

    # without init_from, a new models/var.pt re-runs train@srdd, which trains nothing
    change_var_weights(root)
    assert "models/var.pt" in json.dumps(json.loads(dvc(root, "status", "--json", "train@srdd"))["train@srdd"])
    out = dvc(root, "repro", "--single-item", "train@srdd")
    assert "train@srdd: resumed from step 10, 0 training steps run" in out
    assert (root / "models/srdd.pt").read_bytes() == srdd

    # with init_from, train@srdd starts from models/var.pt: it retrains, and again when that file's weights change
    params["train"]["srdd"]["init_from"] = "models/var.pt"
    write_params(root, params)
    assert set(json.loads(dvc(root, "status", "--json", "train@srdd"))) >= {"train@srdd"}
    out = dvc(root, "repro", "--single-item", "train@srdd")
    assert "Running stage 'train@srdd'" in out and "resumed from" not in out
    trained = (root / "models/srdd.pt").read_bytes()
    assert trained != srdd
    assert dvc(root, "repro", "--single-item", "train@srdd").count("Running stage") == 0
    change_var_weights(root)
    out = dvc(root, "repro", "--single-item", "train@srdd")
    assert "Running stage 'train@srdd'" in out and "resumed from" not in out
    assert (root / "models/srdd.pt").read_bytes() != trained
