"""Training of the domain evaluator (:class:`scalewise.models.evaluator.Evaluator`), the feature
extractor of the generation metrics (library: no params, no MLflow).

Epochs of shuffled batches (the ragged tail dropped), optional random translations, AdamW with
no decay on vectors, 5% warm-up then cosine decay; not resumable (it trains in seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from scalewise.core.device import resolve_device
from scalewise.core.images import to_unit
from scalewise.models.evaluator import Evaluator, EvaluatorArch
from scalewise.training import optim
from scalewise.training.loop import Report, Schedule, StepOut, fit
from scalewise.training.settings import Rule, TrainSettings, at_least, flag

SHIFT = 2  # pixels of the random translations


@dataclass
class EvaluatorConfig(TrainSettings):
    """The ``train_evaluator`` section of params.yaml: evaluator size and its training."""

    width: int = 16  # base channels of the CNN
    feat_dim: int = 64  # penultimate feature dimension; at most 4 x width is useful (its rank)
    steps: int = 300
    batch_size: int = 128
    lr: float = 2e-3  # peak AdamW learning rate (5% linear warm-up, cosine decay to 10%)
    weight_decay: float = 5e-4
    augment: bool = True  # random translations of up to 2 px (zero padding + random crop)

    SECTION: ClassVar[str] = "train_evaluator"

    def rules(self) -> list[Rule]:
        return super().rules() + [at_least("width", 1), at_least("feat_dim", 1), flag("augment")]


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


def _check_data(train_u8: torch.Tensor, train_labels: torch.Tensor, test_u8: torch.Tensor,
                test_labels: torch.Tensor, num_classes: int | None) -> int:
    """The number of classes; ValueError naming the mismatch for bad images or labels."""
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
    return num_classes


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
    num_classes = _check_data(train_u8, train_labels, test_u8, test_labels, num_classes)
    arch = EvaluatorArch(int(train_u8.shape[1]), int(train_u8.shape[2]), num_classes, cfg.width, cfg.feat_dim)
    device = resolve_device(cfg.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Evaluator(arch).to(device=device, memory_format=torch.channels_last)
    opt = optim.adamw(model, cfg.lr, cfg.weight_decay, no_decay=optim.no_decay_vectors)
    g = torch.Generator().manual_seed(cfg.seed)
    epoch = {"order": torch.randperm(len(train_u8), generator=g), "pos": 0}

    def step_fn(step: int) -> StepOut:
        if epoch["pos"] + cfg.batch_size > len(epoch["order"]):  # reshuffle each epoch; drop the ragged tail
            epoch.update(order=torch.randperm(len(train_u8), generator=g), pos=0)
        idx = epoch["order"][epoch["pos"]:epoch["pos"] + cfg.batch_size]
        epoch["pos"] += cfg.batch_size
        x_BCHW = to_unit(train_u8[idx])
        if cfg.augment:
            x_BCHW = _translate(x_BCHW, SHIFT, g)
        loss = F.cross_entropy(model(x_BCHW.to(device)), train_labels[idx].to(device))
        return StepOut(loss, lambda values: {"loss": loss.item(), **values})

    sched = Schedule(cfg.steps, cfg.lr, max(1, cfg.steps // 20))  # 5% warm-up, cosine
    fit(model, opt, sched, step_fn, Report("train_evaluator", "Lower train_evaluator.lr.", progress=progress))
    test, train = evaluate_classifier(model, test_u8, test_labels), evaluate_classifier(model, train_u8, train_labels)
    metrics = {"test_acc": test["acc"], "test_loss": test["loss"], "train_acc": train["acc"],
               "train_loss": train["loss"], "steps": cfg.steps, "params": sum(p.numel() for p in model.parameters())}
    return model, metrics
