"""Dataset sources, the seeded stratified split, the prepared folder, and bad input."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from scalewise.config import ConfigError, from_dict
from scalewise.data import PrepareConfig, content_hash, load_split, prepare_dataset, save_prepared, split
from swtest import ROOT


@pytest.fixture(scope="module")
def mnist():
    return prepare_dataset(PrepareConfig(source="mnist5k", image_size=32, channels=1))


def test_mnist5k_is_split_per_class_and_shuffled(mnist):
    assert mnist.train_images.shape == (4500, 1, 32, 32) and mnist.train_images.dtype == torch.uint8
    assert mnist.test_images.shape == (500, 1, 32, 32)
    assert torch.bincount(mnist.test_labels).tolist() == [50] * 10
    assert torch.bincount(mnist.train_labels).tolist() == [450] * 10
    assert len(torch.unique(mnist.train_labels[:100])) == 10, "labels come sorted: the split must shuffle"
    assert 0 < mnist.train_images.float().mean() < 255


def test_split_is_deterministic_disjoint_and_seed_dependent():
    labels = torch.arange(300) % 7
    a_train, a_test = split(labels, 0.2, seed=1)
    b_train, b_test = split(labels, 0.2, seed=1)
    c_train, _ = split(labels, 0.2, seed=2)
    assert torch.equal(a_train, b_train) and torch.equal(a_test, b_test)
    assert not torch.equal(a_train, c_train)
    assert set(a_train.tolist()).isdisjoint(a_test.tolist())
    assert sorted(a_train.tolist() + a_test.tolist()) == list(range(300))
    capped_train, capped_test = split(labels, 0.2, seed=1, max_per_class=10)
    assert torch.bincount(labels[capped_test]).tolist() == [2] * 7
    assert torch.bincount(labels[capped_train]).tolist() == [8] * 7


def test_digits_in_rgb():
    d = prepare_dataset(PrepareConfig(source="digits", image_size=16, channels=3, test_fraction=0.2))
    assert d.train_images.shape[1:] == (3, 16, 16) and len(d.class_names) == 10
    assert torch.equal(d.train_images[:, 0], d.train_images[:, 1]), "grey digits give equal RGB channels"


def _png(path, value, size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, (value,) * 3 if mode == "RGB" else value).save(path)


def test_imagefolder_with_classes_skips_and_reports_bad_files(tmp_path):
    root = tmp_path / "imgs"
    for c, v in (("cat", 40), ("dog", 200)):
        for i in range(4):
            _png(root / c / f"{i}.png", v + i)
    (root / "cat" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (root / "dog" / "notes.jpg").write_text("not an image")
    (root / "dog" / "readme.txt").write_text("hello")
    cfg = PrepareConfig(source=f"imagefolder:{root}", image_size=8, channels=3, test_fraction=0.25)
    d = prepare_dataset(cfg)
    assert d.class_names == ["cat", "dog"]
    assert d.train_images.shape[0] + d.test_images.shape[0] == 8
    reasons = {p["path"].rsplit("/", 1)[1]: p["reason"] for p in d.skipped}
    assert set(reasons) == {"corrupt.png", "notes.jpg", "readme.txt"}
    assert reasons["corrupt.png"].startswith("unreadable")
    out = save_prepared(d, tmp_path / "prepared", cfg)
    report = json.loads((out / "report.json").read_text())
    assert len(report["skipped"]) == 3
    assert json.loads((out / "manifest.json").read_text())["num_skipped"] == 3


def test_flat_imagefolder_is_one_class(tmp_path):
    for i in range(5):
        _png(tmp_path / f"{i}.png", 10 * i, mode="L")
    d = prepare_dataset(PrepareConfig(source=f"imagefolder:{tmp_path}", image_size=8, test_fraction=0.2))
    assert d.class_names == ["all"] and d.test_images.shape == (1, 1, 8, 8)


def test_cifar10_pickle_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        batch = {b"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 0, 1, 2]}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"plane", b"car", b"bird"]}))
    d = prepare_dataset(PrepareConfig(source=f"cifar:{tmp_path}", image_size=32, channels=3, test_fraction=0.2))
    assert d.class_names == ["plane", "car", "bird"]
    assert d.train_images.shape[0] + d.test_images.shape[0] == 18
    # CHW rows are preserved at 32 px: every output image is one of the input images.
    inputs = {bytes(r) for n in ("data_batch_1", "data_batch_2", "test_batch")
              for r in pickle.loads((tmp_path / n).read_bytes())[b"data"]}
    assert all(bytes(img.reshape(-1).numpy()) in inputs for img in d.test_images)


def test_prepared_folder_round_trips(tmp_path):
    cfg = PrepareConfig(source="digits", image_size=8, max_per_class=20)
    d = prepare_dataset(cfg)
    out = save_prepared(d, tmp_path / "prepared", cfg)
    images, labels, names = load_split(out, "test")
    assert torch.equal(images, d.test_images) and torch.equal(labels, d.test_labels) and names == d.class_names
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(list((out / "test_png").glob("*.png"))) == manifest["num_test"] == 20
    assert sum(manifest["counts"]["train"].values()) == manifest["num_train"] == 180
    assert manifest["content_hash"] == content_hash(prepare_dataset(cfg))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp folder left behind"


@pytest.mark.parametrize(
    "source,error,match",
    [
        ("nope", ConfigError, "unknown source 'nope'"),
        ("imagefolder:/does/not/exist", FileNotFoundError, "/does/not/exist does not exist"),
        ("cifar:/does/not/exist", FileNotFoundError, "/does/not/exist does not exist"),
        ("imagefolder:", ConfigError, "needs a path"),
    ],
)
def test_bad_sources_are_clear_errors(source, error, match):
    with pytest.raises(error, match=match):
        prepare_dataset(PrepareConfig(source=source))


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(ValueError, match=f"no usable image in {tmp_path}"):
        prepare_dataset(PrepareConfig(source=f"imagefolder:{tmp_path}"))


def test_bad_params_are_clear_errors():
    with pytest.raises(ConfigError, match="channels must be 1 or 3, got 2"):
        PrepareConfig(channels=2)
    with pytest.raises(ConfigError, match="unknown parameter.*'imagesize'"):
        from_dict(PrepareConfig, {"imagesize": 32}, "params.yaml: prepare")


def test_stage_reports_a_missing_path_without_a_traceback(tmp_path):
    (tmp_path / "params.yaml").write_text(
        f"tracking: {{enabled: false}}\nprepare: {{source: 'imagefolder:{tmp_path}/missing'}}\n")
    proc = subprocess.run([sys.executable, "-m", "stages.prepare", "--params", str(tmp_path / "params.yaml"),
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "missing does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
