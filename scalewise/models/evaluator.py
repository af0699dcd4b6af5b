"""A small CNN classifier trained on the prepared data: the domain feature extractor of the
generation metrics (FID / IS / KID / precision / recall, see :mod:`scalewise.evaluation.fidelity`);
it is trained by :mod:`scalewise.training.evaluator`.

Inception-v3 features describe natural photos; on 32 px grey digits a classifier trained on
the same data is the more meaningful (and offline) feature space. Numbers measured with it are
comparable only between runs that used the same evaluator file.

Input convention: ``forward`` and ``features`` take float images (B, C, H, W) in [-1, 1]
(``scalewise.core.images.to_unit`` of the uint8 images), C and H = W as built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from scalewise.core.config import ConfigError, from_dict, to_dict
from scalewise.core.io import save_torch
from scalewise.models.checkpoints import load_checkpoint, load_state_checked

KIND = "evaluator"
MAX_TRUNK_SIZE = 32  # stride-2 stem convs bring larger images down to this side (bounds the compute)


def _check_int(where: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}.{name} must be an integer >= {minimum}, got {value!r}")


# ----------------------------------------------------------------------------- config


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
