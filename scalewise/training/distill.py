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

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F

from scalewise.core.config import ConfigError, to_dict
from scalewise.core.device import resolve_device
from scalewise.models import student
from scalewise.models.student import (
    check_markov_teacher, check_student_schedule, init_student, kl_to_teacher, teacher_logits_on_student_inputs,
    tokenizer_for, tokenizer_with_schedule,
)
from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import ScaleTransformer
from scalewise.sampling.generate import generate
from scalewise.training import batches, loop, optim, schedule
from scalewise.training.batches import CodedSet, encode_dataset
from scalewise.training.loop import Report, Schedule, StepOut, TrainResult, fit
from scalewise.training.resume import Checkpointer, code_of, run_key, weights_hash
from scalewise.training.settings import Rule, TokenTrainSettings, above, at_least
from scalewise.training.tokenizer import evaluate_tokenizer


@dataclass
class DistillConfig(TokenTrainSettings):
    """``params.yaml: distill``. Set exactly one of ``patch_nums`` (the student's schedule) and
    ``drop`` (teacher scales to leave out)."""

    patch_nums: list[int] | None = None
    drop: list[int] | None = None
    steps: int = 600
    lr: float = 5e-4
    warmup_steps: int = 20
    ckpt_every: int = 100
    kl_weight: float = 1.0
    temperature: float = 1.0  # KL temperature T
    bench_batch: int = 32  # images per timed sampling run (teacher vs student)
    bench_runs: int = 5

    SECTION: ClassVar[str] = "distill"
    NOT_IN_KEY: ClassVar[tuple[str, ...]] = TokenTrainSettings.NOT_IN_KEY + ("bench_batch", "bench_runs")

    def rules(self) -> list[Rule]:
        return super().rules() + [at_least("kl_weight", 0.0, "number"), above("temperature", 0.0),
                                  at_least("bench_batch", 1), at_least("bench_runs", 1)]

    def __post_init__(self) -> None:
        if (self.patch_nums is None) == (self.drop is None):
            raise ConfigError(
                "set exactly one of distill.patch_nums (the student's schedule, e.g. [1, 2, 4, 6, 8]) "
                f"and distill.drop (teacher scales to leave out, e.g. [3, 5]); got patch_nums={self.patch_nums}, "
                f"drop={self.drop}"
            )
        super().__post_init__()


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
) -> TrainResult:
    """Distil a Markov ``teacher`` into a student with a shorter schedule; resumable via ``state_dir``.

    ``train_u8``: uint8 images (N, C, H, W); ``tokenizer``: the teacher's (full schedule). The
    teacher is moved to ``cfg.device`` and never updated. ``on_log(step, row)`` receives averaged
    ``loss``, ``ce``, ``kl`` (ordinary rows), ``acc`` (teacher-forced argmax accuracy of ordinary
    rows), ``grad_norm`` and ``lr``. The result's model is the student, in eval mode.

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
    model = init_student(teacher, student_pn)
    opt = optim.adamw(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.95), no_decay=optim.no_decay_transformer)
    gen = torch.Generator().manual_seed(cfg.seed)
    key_cfg = {"distill": cfg.key_settings(), "student": to_dict(model.cfg), "teacher": weights_hash(teacher),
               "tokenizer": weights_hash(tokenizer)}
    code = code_of(model, sys.modules[__name__], student, batches, loop, optim, schedule)
    ckpt = Checkpointer(state_dir, run_key(key_cfg, data_hash, code), model, opt, gen, cfg.ckpt_every)
    data, slices = CodedSet(tokens_NL, x_NLCv, train_labels), model.scale_slices()
    masked_prob = cfg.masked_prob if model.cfg.masked_objective else 0.0

    def step_fn(step: int) -> StepOut:
        # the teacher's label dropout: student and teacher see the same labels
        b = data.draw(cfg.batch_size, model.cfg.num_classes, teacher.cfg.cond_drop, masked_prob, slices, gen, device)
        plain_B = b.scored_BL.all(dim=1)  # ordinary rows: the KL and the accuracy are taken on these
        logits_BLV = model(b.labels_B, b.x_BLC, b.tokens_BL, b.revealed_BL)
        ce_BL = F.cross_entropy(logits_BLV.flatten(0, 1), b.tokens_BL.flatten(), reduction="none").view_as(b.tokens_BL)
        ce = (ce_BL * b.scored_BL).sum() / b.scored_BL.sum().clamp_min(1)
        kl = ce.new_zeros(())
        if cfg.kl_weight > 0 and plain_B.any():
            with torch.no_grad():
                t_logits_BLV = teacher_logits_on_student_inputs(teacher, b.labels_B[plain_B], b.x_BLC[plain_B],
                                                                student_pn)
            kl = kl_to_teacher(t_logits_BLV, logits_BLV[plain_B], cfg.temperature)
        loss = ce + cfg.kl_weight * kl

        @torch.no_grad()
        def row(values: dict[str, float]) -> dict[str, float]:
            hit = (logits_BLV[plain_B].argmax(-1) == b.tokens_BL[plain_B]).float()
            return {"loss": loss.item(), "ce": ce.item(), "kl": kl.item(),
                    "acc": float(hit.mean()) if plain_B.any() else 0.0, **values}

        return StepOut(loss, row)

    report = Report("distill", "Lower distill.lr or raise distill.grad_clip.", cfg.log_every, ("loss", "kl"), on_log,
                    progress)
    return fit(model, opt, Schedule(cfg.steps, cfg.lr, cfg.warmup_steps, cfg.grad_clip), step_fn, report, ckpt)


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
