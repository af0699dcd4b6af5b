"""Dataset sources, the seeded stratified split, the prepared folder, and bad input."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from scalewise.core.config import ConfigError, from_dict
from scalewise.data.prepare import PrepareConfig, content_hash, load_split, prepare_dataset, save_prepared, split
from scalewise.core.images import to_unit
from swtest import ROOT


@pytest.fixture(scope="module")
def mnist():
    return prepare_dataset(PrepareConfig(source="mnist5k", image_size=32, channels=1))


# ----------------------------------------------------------------------------- built-in sources


def test_mnist5k_is_split_per_class_and_shuffled(mnist):
    assert mnist.train_images.shape == (4500, 1, 32, 32) and mnist.train_images.dtype == torch.uint8
    assert mnist.test_images.shape == (500, 1, 32, 32) and mnist.test_images.dtype == torch.uint8
    assert mnist.train_labels.dtype == mnist.test_labels.dtype == torch.int64
    assert mnist.class_names == [str(i) for i in range(10)] and mnist.skipped == []
    assert torch.bincount(mnist.test_labels).tolist() == [50] * 10
    assert torch.bincount(mnist.train_labels).tolist() == [450] * 10
    assert len(torch.unique(mnist.train_labels[:100])) == 10, "labels come sorted: the split must shuffle"
    assert len(torch.unique(mnist.test_labels[:50])) >= 5
    assert 0 < mnist.train_images.float().mean() < 255 and mnist.train_images.max() > 200


def test_mnist5k_train_and_test_hold_different_images(mnist):
    train = {bytes(x.numpy()) for x in mnist.train_images.reshape(4500, -1)}
    assert not any(bytes(x.numpy()) in train for x in mnist.test_images.reshape(500, -1))


def test_split_is_deterministic_disjoint_and_seed_dependent():
    labels = torch.arange(300) % 7
    a_train, a_test = split(labels, 0.2, seed=1)
    b_train, b_test = split(labels, 0.2, seed=1)
    c_train, _ = split(labels, 0.2, seed=2)
    assert torch.equal(a_train, b_train) and torch.equal(a_test, b_test)
    assert not torch.equal(a_train, c_train)
    assert a_train.dtype == a_test.dtype == torch.int64
    assert set(a_train.tolist()).isdisjoint(a_test.tolist())
    assert sorted(a_train.tolist() + a_test.tolist()) == list(range(300))
    capped_train, capped_test = split(labels, 0.2, seed=1, max_per_class=10)
    assert torch.bincount(labels[capped_test]).tolist() == [2] * 7
    assert torch.bincount(labels[capped_train]).tolist() == [8] * 7


@pytest.mark.parametrize(
    "class_sizes,fraction,expected_test",
    [
        ([10, 3], 0.1, [1, 1]),  # at least one test image per class
        ([2, 2], 0.9, [1, 1]),  # ... and at least one train image
        ([1, 5], 0.2, [0, 1]),  # a single image goes to train
        ([40, 20], 0.25, [10, 5]),
    ],
)
def test_split_counts_per_class(class_sizes, fraction, expected_test):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(class_sizes)])
    train_idx, test_idx = split(labels, fraction, seed=0)
    assert torch.bincount(labels[test_idx], minlength=len(class_sizes)).tolist() == expected_test
    assert torch.bincount(labels[train_idx]).tolist() == [n - t for n, t in zip(class_sizes, expected_test)]


def test_prepare_dataset_depends_on_the_seed_only():
    a = prepare_dataset(PrepareConfig(source="digits", image_size=8, split_seed=3))
    b = prepare_dataset(PrepareConfig(source="digits", image_size=8, split_seed=3))
    c = prepare_dataset(PrepareConfig(source="digits", image_size=8, split_seed=4))
    assert content_hash(a) == content_hash(b) and torch.equal(a.test_images, b.test_images)
    assert content_hash(a) != content_hash(c) and not torch.equal(a.test_labels, c.test_labels)


def test_digits_in_rgb():
    d = prepare_dataset(PrepareConfig(source="digits", image_size=16, channels=3, test_fraction=0.2))
    assert d.train_images.shape[1:] == (3, 16, 16) and d.train_images.dtype == torch.uint8
    assert d.train_images.shape[0] + d.test_images.shape[0] == 1797 and len(d.class_names) == 10
    assert torch.equal(d.train_images[:, 0], d.train_images[:, 1]), "grey digits give equal RGB channels"
    assert d.train_images.max() > 200, "0..16 values are rescaled to 0..255"


def test_to_unit_maps_uint8_to_minus_one_one():
    x = to_unit(torch.tensor([0, 255, 128], dtype=torch.uint8))
    assert x.dtype == torch.float32 and x[0] == -1 and x[1] == 1 and abs(float(x[2])) < 0.01


# ----------------------------------------------------------------------------- folders on disk


def _png(path, value, size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, (value,) * 3 if mode == "RGB" else value).save(path)


def test_imagefolder_with_classes_skips_and_reports_bad_files(tmp_path):
    root = tmp_path / "imgs"
    for c, v in (("cat", 40), ("dog", 200)):
        for i in range(4):
            _png(root / c / f"{i}.png", v + i)
    _png(root / "dog" / "big.JPEG", 210, size=(64, 48))  # upper-case suffix, other size
    (root / "cat" / "x.png").write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    (root / "cat" / "trunc.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (root / "dog" / "notes.jpg").write_text("not an image")
    (root / "dog" / "readme.txt").write_text("hello")
    (root / "empty").mkdir()  # a class folder with nothing usable is dropped
    cfg = PrepareConfig(source=f"imagefolder:{root}", image_size=8, channels=3, test_fraction=0.25)
    d = prepare_dataset(cfg)
    assert d.class_names == ["cat", "dog"]
    assert d.train_images.shape[1:] == (3, 8, 8)
    assert torch.bincount(torch.cat([d.train_labels, d.test_labels])).tolist() == [4, 5]
    reasons = {p["path"].rsplit("/", 1)[1]: p["reason"] for p in d.skipped}
    assert set(reasons) == {"x.png", "trunc.png", "notes.jpg", "readme.txt", "empty"}
    assert reasons["x.png"].startswith("unreadable") and reasons["notes.jpg"].startswith("unreadable")
    assert "suffix" in reasons["readme.txt"]
    out = save_prepared(d, tmp_path / "prepared", cfg)
    report = json.loads((out / "report.json").read_text())
    assert {p["path"] for p in report["skipped"]} == {p["path"] for p in d.skipped}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_skipped"] == 5 and manifest["class_names"] == ["cat", "dog"]
    assert Image.open(out / "test_png" / "00000.png").mode == "RGB"


def test_flat_imagefolder_is_one_class(tmp_path):
    for i in range(5):
        _png(tmp_path / f"{i}.png", 10 * i, mode="L")
    d = prepare_dataset(PrepareConfig(source=f"imagefolder:{tmp_path}", image_size=8, test_fraction=0.2))
    assert d.class_names == ["all"] and d.test_images.shape == (1, 1, 8, 8)
    assert d.train_images.shape == (4, 1, 8, 8) and d.train_labels.tolist() == [0] * 4


def _write_cifar10(folder, rng, n=6):
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [0, 1, 2] * (n // 3),
                 b"batch_label": b"x"}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"plane", b"car", b"bird"]}))


@pytest.mark.parametrize("resize", ["center_crop", "pad", "squash"])
def test_non_square_images_become_square_as_resize_says(tmp_path, resize):
    wide = np.zeros((4, 12), np.uint8)  # 12 wide, 4 tall: thirds of grey 50 | 200 | 100
    wide[:, :4], wide[:, 4:8], wide[:, 8:] = 50, 200, 100
    for i in range(4):
        Image.fromarray(wide).save(tmp_path / f"{i}.png")
    d = prepare_dataset(PrepareConfig(source=f"imagefolder:{tmp_path}", image_size=8, channels=1,
                                      test_fraction=0.5, resize=resize))
    img = d.test_images[0, 0].int()
    if resize == "center_crop":  # the middle square only, as `scalewise restore` crops
        assert (img - 200).abs().max() <= 2
    elif resize == "pad":  # the whole image, black borders above and below
        assert img[:2].max() == 0 == img[-2:].max() and (img[3:5, 3:5] - 200).abs().max() <= 20  # bicubic overshoot
    else:  # squash: every third survives, stretched
        assert abs(int(img[4, 0]) - 50) <= 2 and abs(int(img[4, -1]) - 100) <= 2 and img.min() > 0
    with pytest.raises(ConfigError, match="prepare.resize must be one of"):
        PrepareConfig(resize="stretch")


def test_cifar10_pickle_batches(tmp_path):
    _write_cifar10(tmp_path, np.random.default_rng(0))
    d = prepare_dataset(PrepareConfig(source=f"cifar:{tmp_path}", image_size=32, channels=3, test_fraction=0.2))
    assert d.class_names == ["plane", "car", "bird"]
    assert d.train_images.shape[0] + d.test_images.shape[0] == 18
    assert torch.bincount(d.test_labels).tolist() == [1, 1, 1]
    # CHW rows are kept as-is at 32 px: every output image is one of the input rows.
    inputs = {bytes(r) for n in ("data_batch_1", "data_batch_2", "test_batch")
              for r in pickle.loads((tmp_path / n).read_bytes())[b"data"]}
    assert all(bytes(img.reshape(-1).numpy()) in inputs for img in d.test_images)
    grey = prepare_dataset(PrepareConfig(source=f"cifar:{tmp_path}", image_size=16, channels=1))
    assert grey.train_images.shape[1:] == (1, 16, 16)


class _Payload:
    """Unpickling this would run ``os.system``: what a malicious batch does."""

    def __reduce__(self):
        import os

        return os.system, ("echo pwned > pwned.txt",)


def test_cifar_batches_that_name_code_are_refused(tmp_path, monkeypatch):
    from scalewise.data.safe_pickle import UnsafePickleError, load_restricted

    monkeypatch.chdir(tmp_path)
    _write_cifar10(tmp_path, np.random.default_rng(0))
    assert load_restricted(tmp_path / "test_batch")[b"labels"] == [0, 1, 2, 0, 1, 2]  # arrays and containers load
    for protocol in (2, 5):  # numpy pickles arrays differently by protocol
        (tmp_path / "p.pkl").write_bytes(pickle.dumps({b"data": np.arange(6, dtype=np.uint8)}, protocol=protocol))
        assert load_restricted(tmp_path / "p.pkl")[b"data"].tolist() == list(range(6))
    batch = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 2], b"x": _Payload()}
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"data_batch_2: refused to unpickle: it names (posix|nt|os)\.system"):
        prepare_dataset(PrepareConfig(source=f"cifar:{tmp_path}", image_size=32, channels=3))
    assert not (tmp_path / "pwned.txt").exists()  # the payload never ran


def test_cifar100_pickle_batches(tmp_path):
    rng = np.random.default_rng(1)
    for name, n in (("train", 8), ("test", 4)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": [0, 1] * (n // 2),
                 b"coarse_labels": [0] * n}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    (tmp_path / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"apple", b"bee"],
                                                  b"coarse_label_names": [b"stuff"]}))
    d = prepare_dataset(PrepareConfig(source=f"cifar:{tmp_path}", image_size=8, channels=3, test_fraction=0.25))
    assert d.class_names == ["apple", "bee"]
    assert torch.bincount(d.train_labels).tolist() == [4, 4] and torch.bincount(d.test_labels).tolist() == [2, 2]


# ----------------------------------------------------------------------------- the prepared folder


def test_prepared_folder_round_trips(tmp_path):
    cfg = PrepareConfig(source="digits", image_size=8, max_per_class=20)
    d = prepare_dataset(cfg)
    out = save_prepared(d, tmp_path / "prepared", cfg)
    for name, images, labels in (("train", d.train_images, d.train_labels), ("test", d.test_images, d.test_labels)):
        obj = torch.load(out / f"{name}.pt", weights_only=True)
        assert torch.equal(obj["images"], images) and torch.equal(obj["labels"], labels)
        assert obj["images"].dtype == torch.uint8 and obj["labels"].dtype == torch.int64
    images, labels, names = load_split(out, "test")
    assert torch.equal(images, d.test_images) and torch.equal(labels, d.test_labels) and names == d.class_names
    manifest = json.loads((out / "manifest.json").read_text())
    pngs = sorted((out / "test_png").iterdir())
    assert len(pngs) == manifest["num_test"] == 20 and all(p.suffix == ".png" for p in pngs)
    first = Image.open(pngs[0])
    assert first.mode == "L" and np.array_equal(np.asarray(first), d.test_images[0, 0].numpy())
    assert sum(manifest["counts"]["train"].values()) == manifest["num_train"] == 180
    assert manifest["counts"]["test"] == {str(c): 2 for c in range(10)}
    assert manifest["content_hash"] == content_hash(prepare_dataset(cfg))
    assert json.loads((out / "report.json").read_text()) == {"skipped": []}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp folder left behind"


def test_save_prepared_replaces_the_old_folder_with_identical_bytes(tmp_path):
    cfg = PrepareConfig(source="digits", image_size=8, max_per_class=10)
    d = prepare_dataset(cfg)
    out = tmp_path / "prepared"
    save_prepared(d, out, cfg)
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "stale.txt").write_text("from an older run")
    save_prepared(d, out, cfg)
    second = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert first == second, "same data must give byte-identical files (DVC hashes them)"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


def test_load_split_errors_say_run_prepare_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the prepare stage first"):
        load_split(tmp_path / "nothing", "train")
    with pytest.raises(FileNotFoundError, match="train.pt.*run the prepare stage first"):
        load_split(tmp_path, "train")
    with pytest.raises(ValueError, match="'val'"):
        load_split(tmp_path, "val")


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "source,error,match",
    [
        ("nope", ConfigError, "unknown source 'nope'.*mnist5k"),
        ("imagefolder:/does/not/exist", FileNotFoundError, "prepare.source.*/does/not/exist does not exist"),
        ("cifar:/does/not/exist", FileNotFoundError, "prepare.source.*/does/not/exist does not exist"),
        ("imagefolder:", ConfigError, "needs a path"),
    ],
)
def test_bad_sources_are_clear_errors(source, error, match):
    with pytest.raises(error, match=match):
        prepare_dataset(PrepareConfig(source=source))


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "junk.txt").write_text("x")
    (tmp_path / "broken.png").write_bytes(b"nope")
    where = re.escape(str(tmp_path))
    with pytest.raises(ValueError, match=f"no usable image in {where} \\(2 file.*broken.png: unreadable"):
        prepare_dataset(PrepareConfig(source=f"imagefolder:{tmp_path}"))
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no usable image.*\\(2 file.*loose file beside class folders"):
        prepare_dataset(PrepareConfig(source=f"imagefolder:{tmp_path}"))


def test_cifar_folder_without_batches_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither CIFAR-10"):
        prepare_dataset(PrepareConfig(source=f"cifar:{tmp_path}"))


@pytest.mark.parametrize(
    "values,match",
    [
        ({"channels": 2}, "prepare.channels must be 1 or 3, got 2"),
        ({"image_size": 4}, "prepare.image_size must be an integer >= 8, got 4"),
        ({"image_size": "32"}, "prepare.image_size"),
        ({"test_fraction": 1.0}, "prepare.test_fraction must be a number in \\(0, 1\\)"),
        ({"max_per_class": 1}, "prepare.max_per_class must be null or an integer >= 2"),
        ({"split_seed": 0.5}, "prepare.split_seed"),
        ({"imagesize": 32}, "unknown parameter.*'imagesize'.*'image_size'"),
    ],
)
def test_bad_params_are_clear_errors(values, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(PrepareConfig, values, "params.yaml: prepare")


# ----------------------------------------------------------------------------- the stage


def _run_stage(tmp_path, prepare: str):
    (tmp_path / "params.yaml").write_text(f"tracking: {{enabled: false}}\nprepare: {prepare}\n")
    return subprocess.run([sys.executable, "-m", "stages.prepare", "--params", str(tmp_path / "params.yaml"),
                           "--out", str(tmp_path / "prepared")], cwd=ROOT, capture_output=True, text=True)


def test_stage_writes_the_prepared_folder(tmp_path):
    proc = _run_stage(tmp_path, "{source: digits, image_size: 8, max_per_class: 30}")
    assert proc.returncode == 0, proc.stderr
    assert "digits: 270 train / 30 test images, 10 classes" in proc.stdout
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert manifest["num_train"] == 270 and manifest["source"] == "digits"
    assert len(list((tmp_path / "prepared" / "test_png").glob("*.png"))) == 30


@pytest.mark.parametrize(
    "prepare,message",
    [
        ("{source: nope}", "unknown source 'nope'"),
        ("{source: 'imagefolder:/no/such/dir'}", "/no/such/dir does not exist"),
    ],
)
def test_stage_reports_bad_params_in_one_line(tmp_path, prepare, message):
    proc = _run_stage(tmp_path, prepare)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
    assert not (tmp_path / "prepared").exists()
