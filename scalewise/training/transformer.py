"""Training of the next-scale transformer on tokenizer codes (library: no params, no MLflow).

The training set is encoded once: per image, the K index maps flattened to ``tokens_NL``
(int64, L = sum p_k^2) and the teacher-forcing inputs ``x_NLCv`` (float, L - p_1^2, Cvae).
Loss: cross-entropy over all L tokens (label smoothing optional). With the masked objective,
a fraction ``masked_prob`` of each batch instead reveals a random part of one random scale's
tokens and is scored only on the hidden tokens of that scale.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from scalewise.core.config import ConfigError, to_dict
from scalewise.training.resume import Checkpointer, StepLog, run_key
from scalewise.models.tokenizer import Tokenizer
from scalewise.training.tokenizer import lr_at, resolve_device, to_unit
from scalewise.models.transformer import ScaleTransformer, TransformerConfig


@dataclass
class ModelSettings:
    """Transformer settings chosen in params (the rest come from the tokenizer and the data)."""

    depth: int = 2
    width: int | None = None
    heads: int | None = None
    mlp_ratio: float = 4.0
    cond_drop: float = 0.1
    masked_objective: bool = True


@dataclass
class TrainConfig:
    """``params.yaml: train.common``."""

    model: ModelSettings = field(default_factory=ModelSettings)
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 2.0
    label_smoothing: float = 0.0
    masked_prob: float = 0.25
    log_every: int = 25
    ckpt_every: int = 200
    seed: int = 0
    device: str = "cpu"
    grid_per_class: int = 4
    grid_cfg: float = 1.5
    threads: int = 0  # torch threads (0 = torch default)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "ckpt_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.masked_prob < 1.0:
            raise ConfigError(f"masked_prob must lie in [0, 1), got {self.masked_prob}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")


@dataclass
class VariantConfig:
    """``params.yaml: train.<variant>``: what differs between VAR and SRDD."""

    mask_kind: str = "causal"
    init_from: str | None = None  # path of another variant's model to start from
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


@torch.no_grad()
def encode_dataset(tokenizer: Tokenizer, images_u8: torch.Tensor, batch_size: int = 256,
                   progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) -> (tokens (N, L) int64, teacher-forcing inputs (N, L - p_1^2, Cvae))."""
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    toks, xs = [], []
    for start in tqdm(range(0, images_u8.shape[0], batch_size), desc="encode", disable=not progress):
        idx_maps = tokenizer.encode(to_unit(images_u8[start:start + batch_size]).to(device))
        toks.append(torch.cat([i.flatten(1) for i in idx_maps], dim=1).cpu())
        xs.append(tokenizer.teacher_forcing_input(idx_maps).cpu())
    return torch.cat(toks), torch.cat(xs)


def masked_batch(tokens_BL: torch.Tensor, slices: list[slice], masked_prob: float,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked objective: (revealed (B, L) bool, scored (B, L) bool).

    A fraction ``masked_prob`` of rows pick one scale k >= 2 and reveal a uniform-random
    fraction of its tokens; they are scored on that scale's hidden tokens only. Other rows
    reveal nothing and are scored on every token.
    """
    B, L = tokens_BL.shape
    revealed = torch.zeros(B, L, dtype=torch.bool)
    scored = torch.ones(B, L, dtype=torch.bool)
    rows = (torch.rand(B, generator=gen) < masked_prob).nonzero().flatten().tolist()
    for b in rows:
        sl = slices[int(torch.randint(1, len(slices), (1,), generator=gen))]
        n = sl.stop - sl.start
        ratio = float(torch.rand(1, generator=gen))
        reveal = torch.rand(n, generator=gen) < ratio
        revealed[b, sl] = reveal
        scored[b] = False
        scored[b, sl] = ~reveal
    return revealed, scored


@dataclass
class TrainResult:
    model: ScaleTransformer
    history: list[dict]
    resumed_from: int


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
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "emb" not in n and "pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "emb" not in n and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    key_cfg = {"train": to_dict(cfg), "model": to_dict(model_cfg), "init": init_state is not None}
    code = [sys.modules[ScaleTransformer.__module__], sys.modules[__name__]]
    ckpt = Checkpointer(state_dir, run_key(key_cfg, data_hash, code), model, opt, gen)
    step, history = ckpt.restore(device)
    resumed_from = step
    slices = model.scale_slices()
    null = model_cfg.num_classes
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train[{model_cfg.mask_kind}]", disable=not progress)
    log = StepLog(cfg.log_every, cfg.steps, history, on_log, bar, show=("loss", "acc"))
    while step < cfg.steps:
        idx = torch.randint(tokens_NL.shape[0], (cfg.batch_size,), generator=gen)
        tokens, x = tokens_NL[idx], x_NLCv[idx]
        drop = torch.rand(cfg.batch_size, generator=gen) < model_cfg.cond_drop
        labels = torch.where(drop, torch.full_like(labels_N[idx], null), labels_N[idx])
        if model_cfg.masked_objective and cfg.masked_prob > 0:
            revealed, scored = masked_batch(tokens, slices, cfg.masked_prob, gen)
        else:
            revealed, scored = None, torch.ones_like(tokens, dtype=torch.bool)
        tokens, x, labels, scored = tokens.to(device), x.to(device), labels.to(device), scored.to(device)
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        logits = model(labels, x, tokens, revealed.to(device) if revealed is not None else None)
        # flat (B*L, V) rows: cross-entropy over a transposed (B, V, L) view is ~7% slower on CPU
        ce = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none",
                             label_smoothing=cfg.label_smoothing).view_as(tokens)  # (B, L)
        loss = (ce * scored).sum() / scored.sum().clamp_min(1)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"train[{model_cfg.mask_kind}]: loss is {loss.item()} at step {step}; the last good checkpoint "
                f"({ckpt.path}) is kept. Lower train.common.lr or raise grad_clip."
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        bar.update(1)
        with torch.no_grad():
            hit = (logits.argmax(-1) == tokens).float()
            plain = scored.all(dim=1)
            row = {"loss": loss.item(), "acc": float(hit[plain].mean()) if plain.any() else 0.0,
                   "grad_norm": float(grad_norm), "lr": lr}
            for k, sl in enumerate(slices, start=1):
                row[f"acc_scale_{k}"] = float(hit[plain, sl].mean()) if plain.any() else 0.0
        log.add(step, row)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            ckpt.save(step, history)
    bar.close()
    model.eval()
    return TrainResult(model=model, history=history, resumed_from=resumed_from)


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
