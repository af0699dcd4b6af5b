"""Scale distillation (SRDD): train a student with a shorter ``patch_nums`` schedule from a
Markovian teacher, and measure what it saves (library: no params, no MLflow).

The student starts as an exact copy of the teacher (:mod:`scalewise.models.student`). Loss
per step: cross-entropy on the ground-truth tokens of the short schedule (the teacher's
tokenizer viewed with that schedule) plus
``kl_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))`` on every student scale
(all of them are teacher scales), taken on the ordinary (not masked-objective) rows. Student
and teacher see the same inputs and the same (possibly dropped) labels.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from scalewise.core.config import ConfigError, to_dict
from scalewise.models.student import (
    check_markov_teacher, check_student_schedule, init_student, kl_to_teacher, teacher_logits_on_student_inputs,
    tokenizer_for, tokenizer_with_schedule,
)
from scalewise.training.resume import Checkpointer, StepLog, run_key
from scalewise.sampling.generate import generate
from scalewise.models.tokenizer import Tokenizer
from scalewise.training.tokenizer import evaluate_tokenizer, lr_at, resolve_device
from scalewise.training.transformer import encode_dataset, masked_batch
from scalewise.models.transformer import ScaleTransformer

# Fields that only shape the stage's report: changing them must not restart training.
REPORT_FIELDS = ("grid_per_class", "grid_cfg", "bench_batch", "bench_runs", "threads")


@dataclass
class DistillConfig:
    """``params.yaml: distill``. Set exactly one of ``patch_nums`` (the student's schedule) and
    ``drop`` (teacher scales to leave out)."""

    patch_nums: list[int] | None = None
    drop: list[int] | None = None
    steps: int = 600
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 20
    grad_clip: float = 2.0
    kl_weight: float = 1.0
    temperature: float = 1.0  # KL temperature T
    masked_prob: float = 0.25  # rows trained on the masked objective (students that have it)
    log_every: int = 25
    ckpt_every: int = 100
    seed: int = 0
    device: str = "cpu"
    grid_per_class: int = 4
    grid_cfg: float = 1.5
    bench_batch: int = 32  # images per timed sampling run (teacher vs student)
    bench_runs: int = 5
    threads: int = 0  # torch threads (0 = torch default)

    def __post_init__(self) -> None:
        if (self.patch_nums is None) == (self.drop is None):
            raise ConfigError(
                "set exactly one of distill.patch_nums (the student's schedule, e.g. [1, 2, 4, 6, 8]) "
                f"and distill.drop (teacher scales to leave out, e.g. [3, 5]); got patch_nums={self.patch_nums}, "
                f"drop={self.drop}"
            )
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "grid_per_class", "bench_batch",
                     "bench_runs"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"distill.{name} must be >= 1, got {getattr(self, name)}")
        for name, ok, allowed in (
            ("lr", self.lr > 0, "> 0"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"), ("grad_clip", self.grad_clip > 0, "> 0"),
            ("kl_weight", self.kl_weight >= 0, ">= 0"), ("temperature", self.temperature > 0, "> 0"),
            ("masked_prob", 0.0 <= self.masked_prob < 1.0, "in [0, 1)"), ("grid_cfg", self.grid_cfg >= 0, ">= 0"),
            ("threads", self.threads >= 0, ">= 0 (0 = torch default)"),
        ):
            if not ok:
                raise ConfigError(f"distill.{name} must be {allowed}, got {getattr(self, name)}")


def student_schedule(teacher_pn: Sequence[int], cfg: DistillConfig) -> list[int]:
    """The student's ``patch_nums``: ``cfg.patch_nums``, or the teacher's without ``cfg.drop``.

    Raises ConfigError naming ``distill.patch_nums`` / ``distill.drop`` unless the result is a
    shorter subsequence of ``teacher_pn`` that keeps the first and last scale.
    """
    t = [int(p) for p in teacher_pn]
    if cfg.drop is not None:
        drop = [int(p) for p in cfg.drop]
        inner = t[1:-1]
        bad = [p for p in drop if p not in inner]
        if bad or not drop or len(set(drop)) != len(drop):
            raise ConfigError(f"distill.drop={cfg.drop}: list distinct intermediate scales of the teacher; "
                              f"allowed: {inner} (the first and last scale are always kept)")
        return [p for p in t if p not in drop]
    s = [int(p) for p in cfg.patch_nums or []]
    check_student_schedule(t, s)
    if len(s) == len(t):
        raise ConfigError(f"distill.patch_nums={s} equals the teacher's schedule: leave out at least one "
                          f"intermediate scale of {t[1:-1]}")
    return s


# ----------------------------------------------------------------------------- training


@dataclass
class DistillResult:
    model: ScaleTransformer  # the student, eval mode
    history: list[dict]
    resumed_from: int


def weights_hash(module: nn.Module) -> str:
    """SHA-256 (16 hex digits) of a module's state: identifies a teacher or tokenizer in run keys."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def distill(
    cfg: DistillConfig,
    teacher: ScaleTransformer,
    tokenizer: Tokenizer,
    train_u8: torch.Tensor,
    train_labels: torch.Tensor,
    data_hash: str,
    state_dir: str | Path,
    on_log: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> DistillResult:
    """Distil a Markov ``teacher`` into a student with a shorter schedule; resumable via ``state_dir``.

    ``train_u8``: uint8 images (N, C, H, W); ``tokenizer``: the teacher's (full schedule). The
    teacher is moved to ``cfg.device`` and never updated. ``on_log(step, row)`` receives averaged
    ``loss``, ``ce``, ``kl`` (ordinary rows), ``acc`` (teacher-forced argmax accuracy of ordinary
    rows), ``grad_norm`` and ``lr``.

    Raises:
        ValueError: the teacher is not Markov or does not match the tokenizer.
        FloatingPointError: NaN/inf loss (the last good checkpoint is kept).
    """
    if list(teacher.cfg.patch_nums) != list(tokenizer.patch_nums):
        raise ValueError(f"teacher patch_nums {teacher.cfg.patch_nums} differ from the tokenizer's "
                         f"{list(tokenizer.patch_nums)}: use the tokenizer the teacher was trained with")
    check_markov_teacher(teacher)
    device = resolve_device(cfg.device)
    student_pn = student_schedule(teacher.cfg.patch_nums, cfg)
    teacher = teacher.to(device)
    tokens_NL, x_NLCv = encode_dataset(tokenizer_with_schedule(tokenizer, student_pn), train_u8, progress=progress)
    torch.manual_seed(cfg.seed)
    model = init_student(teacher, student_pn).train()
    named = list(model.named_parameters())
    decay = [p for n, p in named if p.dim() >= 2 and "emb" not in n and "pos" not in n]
    no_decay = [p for n, p in named if not (p.dim() >= 2 and "emb" not in n and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    key_cfg = {"distill": {k: v for k, v in to_dict(cfg).items() if k not in REPORT_FIELDS},
               "student": to_dict(model.cfg), "teacher": weights_hash(teacher), "tokenizer": weights_hash(tokenizer)}
    code = [sys.modules[m.__module__] for m in (ScaleTransformer, masked_batch, init_student, distill)]
    ckpt = Checkpointer(state_dir, run_key(key_cfg, data_hash, code), model, opt, gen)
    step, history = ckpt.restore(device)
    resumed_from = step
    slices, null, B = model.scale_slices(), model.cfg.num_classes, cfg.batch_size
    bar = tqdm(total=cfg.steps, initial=step, desc="distill", disable=not progress)
    log = StepLog(cfg.log_every, cfg.steps, history, on_log, bar, show=("loss", "kl"))
    while step < cfg.steps:
        idx = torch.randint(tokens_NL.shape[0], (B,), generator=gen)
        tokens, x = tokens_NL[idx], x_NLCv[idx]
        drop = torch.rand(B, generator=gen) < teacher.cfg.cond_drop  # same labels for student and teacher
        labels = torch.where(drop, torch.full_like(train_labels[idx], null), train_labels[idx])
        if model.cfg.masked_objective and cfg.masked_prob > 0:
            revealed, scored = masked_batch(tokens, slices, cfg.masked_prob, gen)
        else:
            revealed, scored = None, torch.ones_like(tokens, dtype=torch.bool)
        tokens, x, labels, scored = tokens.to(device), x.to(device), labels.to(device), scored.to(device)
        plain_B = scored.all(dim=1)  # ordinary rows: the KL and the accuracy are taken on these
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        logits_BLV = model(labels, x, tokens, revealed.to(device) if revealed is not None else None)
        ce_BL = F.cross_entropy(logits_BLV.flatten(0, 1), tokens.flatten(), reduction="none").view_as(tokens)
        ce = (ce_BL * scored).sum() / scored.sum().clamp_min(1)
        kl = ce.new_zeros(())
        if cfg.kl_weight > 0 and plain_B.any():
            with torch.no_grad():
                t_logits_BLV = teacher_logits_on_student_inputs(teacher, labels[plain_B], x[plain_B], student_pn)
            kl = kl_to_teacher(t_logits_BLV, logits_BLV[plain_B], cfg.temperature)
        loss = ce + cfg.kl_weight * kl
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"distill: loss is {loss.item()} at step {step}; the last good checkpoint ({ckpt.path}) is kept. "
                "Lower distill.lr or raise distill.grad_clip."
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        bar.update(1)
        with torch.no_grad():
            hit = (logits_BLV[plain_B].argmax(-1) == tokens[plain_B]).float()
            row = {"loss": loss.item(), "ce": ce.item(), "kl": kl.item(),
                   "acc": float(hit.mean()) if plain_B.any() else 0.0, "grad_norm": float(grad_norm), "lr": lr}
        log.add(step, row)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            ckpt.save(step, history)
    bar.close()
    model.eval()
    return DistillResult(model=model, history=history, resumed_from=resumed_from)


# ----------------------------------------------------------------------------- what it saves


def schedule_savings(teacher_pn: Sequence[int], student_pn: Sequence[int]) -> dict:
    """Sampling work saved by the short schedule (pure).

    One transformer forward per scale (CFG's conditional and unconditional halves share it), so
    ``steps_saved`` = scales saved = forward passes saved; tokens are those predicted per image.
    """
    return {"teacher_patch_nums": [int(p) for p in teacher_pn], "student_patch_nums": [int(p) for p in student_pn],
            "steps_saved": len(teacher_pn) - len(student_pn),
            "teacher_forward_passes": len(teacher_pn), "student_forward_passes": len(student_pn),
            "teacher_tokens": sum(p * p for p in teacher_pn), "student_tokens": sum(p * p for p in student_pn)}


def sampling_speed(teacher: ScaleTransformer, student: ScaleTransformer, tokenizer: Tokenizer,
                   batch_size: int = 32, cfg: float = 1.5, runs: int = 5, seed: int = 0) -> dict:
    """Images per second of teacher and student sampling side by side, via :func:`generate`.

    Same batch (classes cycled), guidance and seed; one untimed warm-up each, then ``runs``
    timed runs alternating teacher and student; the median of each. Returns
    ``teacher_images_per_s``, ``student_images_per_s`` and ``speedup`` (student / teacher).
    """
    labels = torch.arange(batch_size) % teacher.num_classes
    models = {"teacher": (teacher, tokenizer_for(teacher, tokenizer)),
              "student": (student, tokenizer_for(student, tokenizer))}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for r in range(runs + 1):
        for name, (model, tok) in models.items():
            t0 = time.perf_counter()
            generate(model, tok, labels, cfg=cfg, seed=seed)
            if r > 0:
                seconds[name].append(time.perf_counter() - t0)
    ips = {name: batch_size / statistics.median(s) for name, s in seconds.items()}
    return {"teacher_images_per_s": ips["teacher"], "student_images_per_s": ips["student"],
            "speedup": ips["student"] / ips["teacher"]}


def tokenizer_psnr(tokenizer: Tokenizer, student_pn: Sequence[int], images_u8: torch.Tensor) -> dict:
    """Reconstruction PSNR (dB, all scales decoded) of uint8 images with the full and the short schedule."""
    return {"tokenizer_psnr_full": evaluate_tokenizer(tokenizer, images_u8)["psnr"],
            "tokenizer_psnr_short": evaluate_tokenizer(tokenizer_with_schedule(tokenizer, student_pn), images_u8)["psnr"]}
