"""A small CNN classifier trained on the prepared data: the domain feature extractor of the
generation metrics (FID / IS / KID / precision / recall, see :mod:`scalewise.evaluation.fidelity`).

Inception-v3 features describe natural photos; on 32 px grey digits a classifier trained on
the same data is the more meaningful (and offline) feature space. Numbers measured with it are
comparable only between runs that used the same evaluator file.

Input convention: ``forward`` and ``features`` take float images (B, C, H, W) in [-1, 1]
(``scalewise.core.images.to_unit`` of the uint8 images), C and H = W as built.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from scalewise.models.checkpoints import load_checkpoint, load_state_checked
from scalewise.core.config import ConfigError, from_dict, to_dict
from scalewise.core.images import to_unit
from scalewise.core.io import save_torch
from scalewise.training.tokenizer import lr_at, resolve_device

KIND = "evaluator"
MAX_TRUNK_SIZE = 32  # stride-2 stem convs bring larger images down to this side (bounds the compute)


def _check_int(where: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}.{name} must be an integer >= {minimum}, got {value!r}")


def _check_number(where: str, name: str, value: Any, minimum: float, strict: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ConfigError(f"{where}.{name} must be a number {bound}, got {value!r}")


# ----------------------------------------------------------------------------- configs


@dataclass
class EvaluatorArch:
    """What an :class:`Evaluator` is built from (stored in its checkpoint)."""

    in_channels: int  # 1 (grey) or 3 (RGB)
    image_size: int  # side of the square input images, pixels, >= 8
    num_classes: int  # >= 2
    width: int = 16  # base channels; the trunk has width, 2 width, 4 width
    feat_dim: int = 64  # dimension of the penultimate features (the FID / KID / PRC space)

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3) or isinstance(self.in_channels, bool):
            raise ConfigError(f"evaluator in_channels must be 1 or 3, got {self.in_channels!r}")
        _check_int("evaluator", "image_size", self.image_size, 8)
        _check_int("evaluator", "num_classes", self.num_classes, 2)
        _check_int("evaluator", "width", self.width, 1)
        _check_int("evaluator", "feat_dim", self.feat_dim, 1)


@dataclass
class EvaluatorConfig:
    """The ``train_evaluator`` section of params.yaml: evaluator size and its training."""

    width: int = 16  # base channels of the CNN
    feat_dim: int = 64  # penultimate feature dimension; at most 4 x width is useful (its rank)
    steps: int = 300  # optimiser steps
    batch_size: int = 128
    lr: float = 2e-3  # peak AdamW learning rate (5% linear warm-up, cosine decay to 10%)
    weight_decay: float = 5e-4  # AdamW decoupled weight decay
    seed: int = 0  # initialisation, batch order and augmentation
    device: str = "cpu"  # cpu | cuda | cuda:N | mps
    augment: bool = True  # random translations of up to 2 px (zero padding + random crop)

    def __post_init__(self) -> None:
        where = "train_evaluator"
        _check_int(where, "width", self.width, 1)
        _check_int(where, "feat_dim", self.feat_dim, 1)
        _check_int(where, "steps", self.steps, 1)
        _check_int(where, "batch_size", self.batch_size, 1)
        _check_number(where, "lr", self.lr, 0.0, strict=True)
        _check_number(where, "weight_decay", self.weight_decay, 0.0, strict=False)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"{where}.seed must be an integer, got {self.seed!r}")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"{where}.device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if not isinstance(self.augment, bool):
            raise ConfigError(f"{where}.augment must be true or false, got {self.augment!r}")


# ----------------------------------------------------------------------------- model


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Evaluator(nn.Module):
    """CNN classifier: conv-BN-ReLU stages (width, 2 width, 4 width; 2x max-pool between them),
    global average pool, a ``feat_dim`` linear layer standardised by a non-affine BatchNorm (the
    features: about zero mean and unit variance per dimension on the training data, so FID and
    KID have a fixed scale), then ReLU and a linear classifier."""

    def __init__(self, arch: EvaluatorArch) -> None:
        super().__init__()
        self.arch = arch
        w, size = arch.width, arch.image_size
        stem = [_conv_bn_relu(arch.in_channels, w)]
        while size > MAX_TRUNK_SIZE:
            stem.append(_conv_bn_relu(w, w, stride=2))
            size = (size + 1) // 2
        self.trunk = nn.Sequential(
            *stem, _conv_bn_relu(w, w), nn.MaxPool2d(2),  # (B, w, s/2, s/2), s = min(S, 32)-ish
            _conv_bn_relu(w, 2 * w), _conv_bn_relu(2 * w, 2 * w), nn.MaxPool2d(2),  # (B, 2w, s/4, s/4)
            _conv_bn_relu(2 * w, 4 * w), _conv_bn_relu(4 * w, 4 * w),  # (B, 4w, s/4, s/4)
        )
        self.feat = nn.Sequential(nn.Linear(4 * w, arch.feat_dim, bias=False),
                                  nn.BatchNorm1d(arch.feat_dim, affine=False))
        self.head = nn.Linear(arch.feat_dim, arch.num_classes)

    def _check(self, x_BCHW: torch.Tensor) -> None:
        a = self.arch
        if x_BCHW.dim() != 4 or tuple(x_BCHW.shape[1:]) != (a.in_channels, a.image_size, a.image_size):
            raise ValueError(f"evaluator expects images (B, {a.in_channels}, {a.image_size}, {a.image_size}) "
                             f"in [-1, 1], got shape {tuple(x_BCHW.shape)}; train an evaluator on this data")

    def features(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """Float images (B, C, H, W) in [-1, 1] -> standardised penultimate features (B, feat_dim)."""
        self._check(x_BCHW)
        # channels-last convs are ~30% faster on CPU; .to() (not .contiguous()) also restrides C = 1
        # inputs, which count as channels-last already and would otherwise take a slow mixed path
        x_BCHW = x_BCHW.to(memory_format=torch.channels_last)
        h_BC = self.trunk(x_BCHW).mean(dim=(2, 3))  # global average pool
        return self.feat(h_BC)

    def classify(self, feat_BD: torch.Tensor) -> torch.Tensor:
        """Features (B, feat_dim) -> class logits (B, num_classes)."""
        return self.head(F.relu(feat_BD))

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """Float images (B, C, H, W) in [-1, 1] -> class logits (B, num_classes)."""
        return self.classify(self.features(x_BCHW))


# ----------------------------------------------------------------------------- training


def _translate(x_BCHW: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Each image shifted by its own random (dy, dx) in -pad..pad, the border filled with -1 (black)."""
    B, _, H, W = x_BCHW.shape
    x_pad = F.pad(x_BCHW, (pad, pad, pad, pad), value=-1.0)  # (B, C, H+2p, W+2p)
    dy_B, dx_B = torch.randint(0, 2 * pad + 1, (2, B), generator=g)
    rows_BH = dy_B[:, None] + torch.arange(H)
    cols_BW = dx_B[:, None] + torch.arange(W)
    # advanced indices around a slice: result dims (B, H, W, C)
    crops_BHWC = x_pad[torch.arange(B)[:, None, None], :, rows_BH[:, :, None], cols_BW[:, None, :]]
    return crops_BHWC.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def evaluate_classifier(model: Evaluator, images_u8: torch.Tensor, labels: torch.Tensor,
                        batch_size: int = 256) -> dict[str, float]:
    """``{"acc", "loss"}`` of ``model`` on uint8 images (N, C, H, W) with int64 labels (N,); eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(images_u8), batch_size):
        x_BCHW = to_unit(images_u8[i:i + batch_size]).to(device)
        y_B = labels[i:i + batch_size].to(device)
        logits_BK = model(x_BCHW)
        correct += int((logits_BK.argmax(1) == y_B).sum())
        loss += float(F.cross_entropy(logits_BK, y_B, reduction="sum"))
    model.train(was_training)
    n = max(1, len(images_u8))
    return {"acc": correct / n, "loss": loss / n}


def train_evaluator(cfg: EvaluatorConfig, train_u8: torch.Tensor, train_labels: torch.Tensor,
                    test_u8: torch.Tensor, test_labels: torch.Tensor, progress: bool = True,
                    num_classes: int | None = None) -> tuple[Evaluator, dict[str, Any]]:
    """Train an :class:`Evaluator` on uint8 images (N, C, S, S) in 0..255 with int64 labels (N,).

    ``num_classes`` defaults to ``max(label) + 1`` over both splits. Bit-for-bit deterministic
    for ``cfg.seed`` on CPU (CUDA kernels may differ in the last bits); the global RNG state is
    left untouched.

    Returns:
        (the model in eval mode on ``cfg.device``, ``{"test_acc", "test_loss", "train_acc",
        "train_loss", "steps", "params"}``; accuracies in [0, 1], losses are mean cross-entropy).
    """
    if train_u8.dim() != 4 or train_u8.dtype != torch.uint8 or train_u8.shape[2] != train_u8.shape[3]:
        raise ValueError(f"train images must be uint8 (N, C, S, S), got {train_u8.dtype} {tuple(train_u8.shape)}")
    if test_u8.shape[1:] != train_u8.shape[1:] or min(len(train_u8), len(test_u8)) == 0 \
            or (len(train_u8), len(test_u8)) != (len(train_labels), len(test_labels)):
        raise ValueError(f"train {tuple(train_u8.shape)} / test {tuple(test_u8.shape)} images and their labels "
                         f"({len(train_labels)}, {len(test_labels)}) do not match")
    seen = int(max(train_labels.max(), test_labels.max())) + 1
    if num_classes is None:
        num_classes = max(2, seen)
    lowest = int(min(train_labels.min(), test_labels.min()))
    if lowest < 0 or seen > num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {lowest}..{seen - 1}")
    arch = EvaluatorArch(int(train_u8.shape[1]), int(train_u8.shape[2]), num_classes, cfg.width, cfg.feat_dim)
    device = resolve_device(cfg.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Evaluator(arch).to(device=device, memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.dim() > 1]  # no decay on BN and biases
    rest = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    order, pos = torch.randperm(len(train_u8), generator=g), 0
    model.train()
    for step in tqdm(range(cfg.steps), desc="train_evaluator", disable=not progress):
        if pos + cfg.batch_size > len(order):  # reshuffle each epoch; drop the ragged tail
            order, pos = torch.randperm(len(train_u8), generator=g), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        x_BCHW = to_unit(train_u8[idx])
        if cfg.augment:
            x_BCHW = _translate(x_BCHW, 2, g)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, max(1, cfg.steps // 20), cfg.steps)  # 5% warm-up, cosine
        loss = F.cross_entropy(model(x_BCHW.to(device)), train_labels[idx].to(device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"train_evaluator: loss is {loss.item()} at step {step}; lower train_evaluator.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    test, train = evaluate_classifier(model, test_u8, test_labels), evaluate_classifier(model, train_u8, train_labels)
    metrics = {"test_acc": test["acc"], "test_loss": test["loss"], "train_acc": train["acc"],
               "train_loss": train["loss"], "steps": cfg.steps, "params": sum(p.numel() for p in model.parameters())}
    return model, metrics


# ----------------------------------------------------------------------------- files


def save_evaluator(path: str | os.PathLike, model: Evaluator, **extra: Any) -> Path:
    """``{"kind": "evaluator", "config", "state_dict", **extra}`` written atomically.

    ``extra`` values must be plain data (str, numbers, lists, dicts, tensors): the file is read
    back with ``weights_only=True``.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_torch(path, {"kind": KIND, "config": to_dict(model.arch), "state_dict": state, **extra})


def load_evaluator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Evaluator:
    """The evaluator saved at ``path`` (by the ``train_evaluator`` stage), in eval mode.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an evaluator checkpoint, or its weights do not match its config.
    """
    obj = load_checkpoint(path, KIND)
    model = Evaluator(from_dict(EvaluatorArch, obj["config"], f"{path}: config"))
    load_state_checked(model, obj["state_dict"], path)
    return model.to(device=device, memory_format=torch.channels_last).eval()
