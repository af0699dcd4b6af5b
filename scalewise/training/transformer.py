"""Training of the next-scale transformer on tokenizer codes (library: no params, no MLflow).

Batches come from the coded training set (:mod:`scalewise.training.batches`). Loss:
cross-entropy over all L tokens (label smoothing optional). With the masked objective, a
fraction ``masked_prob`` of each batch instead reveals a random part of one random scale's
tokens and is scored only on the hidden tokens of that scale.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F

from scalewise.core.config import to_dict
from scalewise.core.device import resolve_device
from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import ScaleTransformer, TransformerConfig
from scalewise.training import batches, loop, optim, schedule
from scalewise.training.batches import CodedSet
from scalewise.training.loop import Report, Schedule, StepOut, TrainResult, fit
from scalewise.training.resume import Checkpointer, code_of, run_key, state_hash
from scalewise.training.settings import Rule, TokenTrainSettings, fraction


@dataclass
class ModelSettings:
    """Transformer settings chosen in params (the rest come from the tokenizer and the data)."""

    depth: int = 2  # width = 64 * depth, heads = depth unless set
    width: int | None = None
    heads: int | None = None
    mlp_ratio: float = 4.0
    cond_drop: float = 0.1  # label dropout for classifier-free guidance
    masked_objective: bool = True  # also learn to re-predict hidden tokens (masked resampling)


@dataclass
class TrainConfig(TokenTrainSettings):
    """``params.yaml: train.common``."""

    model: ModelSettings = field(default_factory=ModelSettings)
    steps: int = 1500
    label_smoothing: float = 0.0

    SECTION: ClassVar[str] = "train.common"

    def rules(self) -> list[Rule]:
        return super().rules() + [fraction("label_smoothing")]


@dataclass
class VariantConfig:
    """``params.yaml: train.<model>``: what differs between VAR and SRDD."""

    mask_kind: str = "causal"
    init_from: str | None = None  # path of another model's file to start from (its weights are in the run key)
    official: str | None = None  # path of an official release VAR (causal): imported instead of trained


def build_model_config(settings: ModelSettings, variant: VariantConfig, tokenizer: Tokenizer,
                       num_classes: int) -> TransformerConfig:
    """The full transformer config: params settings + tokenizer codebook/scales + data classes."""
    return TransformerConfig(
        depth=settings.depth, width=settings.width, heads=settings.heads, mlp_ratio=settings.mlp_ratio,
        vocab_size=tokenizer.cfg.vocab_size, cvae=tokenizer.cfg.cvae, patch_nums=list(tokenizer.patch_nums),
        num_classes=num_classes, cond_drop=settings.cond_drop, mask_kind=variant.mask_kind,
        masked_objective=settings.masked_objective,
    )


def train_transformer(
    cfg: TrainConfig,
    model_cfg: TransformerConfig,
    tokens_NL: torch.Tensor,
    x_NLCv: torch.Tensor,
    labels_N: torch.Tensor,
    data_hash: str,
    state_dir: str | Path,
    init_state: dict | None = None,
    on_log: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a transformer; resumable via ``state_dir``; returns the model in eval mode.

    ``init_state``: weights to start from (their content hash is part of the run key).
    ``on_log(step, row)`` receives averaged ``loss``, ``acc`` (all tokens), ``acc_scale_k``
    (k = 1..K, teacher-forced argmax accuracy of ordinary rows), ``grad_norm`` and ``lr``.

    Raises:
        FloatingPointError: NaN/inf loss (the last good checkpoint is kept).
    """
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = ScaleTransformer(model_cfg).to(device)
    if init_state is not None:
        missing, unexpected = model.load_state_dict(init_state, strict=False)
        if unexpected or any(not k.startswith(("mask_embed", "tok_embed")) for k in missing):
            raise ValueError(f"init_from checkpoint does not fit: missing {missing}, unexpected {unexpected}")
    opt = optim.adamw(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.95), no_decay=optim.no_decay_transformer)
    gen = torch.Generator().manual_seed(cfg.seed)
    key_cfg = {"train": cfg.key_settings(), "model": to_dict(model_cfg),
               "init": state_hash(init_state) if init_state is not None else None}
    code = code_of(model, sys.modules[__name__], batches, loop, optim, schedule)
    ckpt = Checkpointer(state_dir, run_key(key_cfg, data_hash, code), model, opt, gen, cfg.ckpt_every)
    data, slices = CodedSet(tokens_NL, x_NLCv, labels_N), model.scale_slices()
    masked_prob = cfg.masked_prob if model_cfg.masked_objective else 0.0

    def step_fn(step: int) -> StepOut:
        b = data.draw(cfg.batch_size, model_cfg.num_classes, model_cfg.cond_drop, masked_prob, slices, gen, device)
        logits_BLV = model(b.labels_B, b.x_BLC, b.tokens_BL, b.revealed_BL)
        # flat (B*L, V) rows: cross-entropy over a transposed (B, V, L) view is ~7% slower on CPU
        ce_BL = F.cross_entropy(logits_BLV.flatten(0, 1), b.tokens_BL.flatten(), reduction="none",
                                label_smoothing=cfg.label_smoothing).view_as(b.tokens_BL)
        loss = (ce_BL * b.scored_BL).sum() / b.scored_BL.sum().clamp_min(1)

        @torch.no_grad()
        def row(values: dict[str, float]) -> dict[str, float]:
            hit_BL = (logits_BLV.argmax(-1) == b.tokens_BL).float()
            plain_B = b.scored_BL.all(dim=1)
            out = {"loss": loss.item(), "acc": float(hit_BL[plain_B].mean()) if plain_B.any() else 0.0, **values}
            for k, sl in enumerate(slices, start=1):
                out[f"acc_scale_{k}"] = float(hit_BL[plain_B, sl].mean()) if plain_B.any() else 0.0
            return out

        return StepOut(loss, row)

    name = f"train[{model_cfg.mask_kind}]"
    report = Report(name, "Lower train.common.lr or raise grad_clip.", cfg.log_every, ("loss", "acc"), on_log, progress)
    return fit(model, opt, Schedule(cfg.steps, cfg.lr, cfg.warmup_steps, cfg.grad_clip), step_fn, report, ckpt)


@torch.no_grad()
def evaluate_transformer(model: ScaleTransformer, tokens_NL: torch.Tensor, x_NLCv: torch.Tensor,
                         labels_N: torch.Tensor, batch_size: int = 256) -> dict:
    """Teacher-forced test loss and per-scale token accuracy (conditional, no resampling)."""
    model.eval()
    device = next(model.parameters()).device
    slices = model.scale_slices()
    loss_sum, hits, n = 0.0, torch.zeros(len(slices)), 0
    for s in range(0, tokens_NL.shape[0], batch_size):
        tok, x, lab = tokens_NL[s:s + batch_size].to(device), x_NLCv[s:s + batch_size].to(device), labels_N[s:s + batch_size].to(device)
        logits = model(lab, x)
        loss_sum += float(F.cross_entropy(logits.flatten(0, 1), tok.flatten(), reduction="sum"))
        hit = (logits.argmax(-1) == tok).float().cpu()
        hits += torch.stack([hit[:, sl].sum() / (sl.stop - sl.start) for sl in slices])
        n += tok.shape[0]
    return {"test_loss": loss_sum / (n * tokens_NL.shape[1]),
            "test_acc_by_scale": (hits / n).tolist()}


def class_mean_proxy(samples_u8: torch.Tensor, sample_labels: torch.Tensor, ref_u8: torch.Tensor,
                     ref_labels: torch.Tensor, num_classes: int) -> float:
    """Evaluator-free check of class conditioning, in pixel space.

    Fraction of samples whose nearest class mean (of the reference images) is the mean of
    their own class. 1/num_classes is chance.
    """
    means = torch.stack([ref_u8[ref_labels == c].float().mean(0) for c in range(num_classes)])  # (K, C, H, W)
    d = torch.cdist(samples_u8.float().flatten(1), means.flatten(1))  # (N, K)
    return float((d.argmin(1) == sample_labels).float().mean())
