"""The distilled student: its schedule, its tokenizer view and its exact start from a Markov teacher.

A student keeps a subsequence of the teacher's scales (first and last included). It starts as
an exact copy of the teacher: its position embeddings of scale p are the teacher's rows for
scale p, its level embedding of p is the teacher's level of p. A Markov teacher's logits for
scale p depend only on scale p's input, so at initialisation the student's logits on every
scale equal the teacher's logits given the same per-scale input
(:func:`teacher_logits_on_student_inputs`), and the distillation KL starts at zero.

The student's tokens and inputs come from the teacher's tokenizer viewed with the short
schedule (:func:`tokenizer_with_schedule`); anything that samples from a student uses
:func:`tokenizer_for`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scalewise.core.config import ConfigError
from scalewise.models.masks import attn_bias
from scalewise.models.tokenizer import Tokenizer, phi_index
from scalewise.models.transformer import ScaleTransformer

# ----------------------------------------------------------------------------- schedules


def check_student_schedule(teacher_pn: Sequence[int], student_pn: Sequence[int], name: str = "patch_nums") -> None:
    """Raise ConfigError unless ``student_pn`` is a strictly increasing subsequence of
    ``teacher_pn`` that keeps its first and last scale."""
    t, s = [int(p) for p in teacher_pn], [int(p) for p in student_pn]
    where = f"distill.{name}"
    if not s or s[0] != t[0] or s[-1] != t[-1]:
        raise ConfigError(f"{where}: the student schedule {s} must keep the teacher's first and last scale "
                          f"({t[0]} and {t[-1]}; teacher patch_nums {t})")
    if any(p not in t for p in s) or any(b <= a for a, b in zip(s, s[1:])):
        raise ConfigError(f"{where}: the student schedule {s} must be a strictly increasing subsequence of the "
                          f"teacher's patch_nums {t}")


# ----------------------------------------------------------------------------- tokenizer view


def tokenizer_with_schedule(tokenizer: Tokenizer, patch_nums: Sequence[int]) -> Tokenizer:
    """A view of ``tokenizer`` that quantizes over ``patch_nums``, sharing every weight.

    The residual quantizer works with any schedule that ends at the latent size. Each scale is
    served by the phi conv the tokenizer uses for the same patch size (by position in the short
    schedule, :func:`scalewise.models.tokenizer.phi_index`, only for patch sizes the tokenizer
    does not have), so a kept scale's codes decode as they do in the full schedule. No
    parameter is copied: training or moving one moves the other.

    Raises:
        ConfigError: ``patch_nums`` is not strictly increasing or does not end at the latent size.
    """
    pn = [int(p) for p in patch_nums]
    latent = tokenizer.patch_nums[-1]
    if not pn or pn[-1] != latent:
        raise ConfigError(f"patch_nums={pn} must end at the tokenizer's latent size {latent}")
    cfg = dataclasses.replace(tokenizer.cfg, patch_nums=pn)  # validates (positive, increasing)
    quant = _shallow_copy(tokenizer.quantize)
    quant.patch_nums, quant._rest_pool = tuple(pn), None
    quant.quant_resi = PhiByPatch(tokenizer.quantize.quant_resi, list(tokenizer.patch_nums), pn)
    view = _shallow_copy(tokenizer)
    view.cfg = cfg
    view.quantize = quant
    return view


class PhiByPatch(nn.Module):
    """The shared phi convs of a tokenizer (the same modules), picked for a new schedule by patch size."""

    def __init__(self, shared: nn.Module, full_pn: list[int], pn: list[int]):
        super().__init__()
        self.qresi_ls = shared.qresi_ls
        n = len(self.qresi_ls)
        self.index = [phi_index(full_pn.index(p), len(full_pn), n) if p in full_pn else phi_index(k, len(pn), n)
                      for k, p in enumerate(pn)]

    def for_scale(self, si: int, num_scales: int) -> nn.Module:
        """The phi of scale ``si`` of the view's schedule (``num_scales`` is its length)."""
        return self.qresi_ls[self.index[si]]


def _shallow_copy(module: nn.Module) -> nn.Module:
    """A new module object whose submodules, parameters and buffers are the same objects as
    ``module``'s (the registries are copied, so replacing an entry leaves ``module`` unchanged)."""
    out = module.__class__.__new__(module.__class__)
    out.__dict__.update({k: v.copy() if isinstance(v, dict) else v for k, v in module.__dict__.items()})
    return out


def tokenizer_for(model: ScaleTransformer, tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer to sample or restore with ``model``: ``tokenizer`` itself, or its view with
    the model's schedule when they differ (a distilled student)."""
    if list(model.cfg.patch_nums) == list(tokenizer.patch_nums):
        return tokenizer
    return tokenizer_with_schedule(tokenizer, model.cfg.patch_nums)


# ----------------------------------------------------------------------------- student


def check_markov_teacher(teacher: ScaleTransformer) -> None:
    """Raise ValueError unless ``teacher`` attends within a scale only (mask_kind ``markov``)."""
    if teacher.cfg.mask_kind != "markov":
        raise ValueError(
            f"scale distillation needs a Markov teacher (mask_kind 'markov'), got mask_kind "
            f"{teacher.cfg.mask_kind!r}: the KL on shared scales uses the teacher's logits for scale p "
            "given only scale p's input, which is the teacher's own prediction only when it sees no other scale"
        )


def init_student(teacher: ScaleTransformer, student_pn: Sequence[int]) -> ScaleTransformer:
    """A student with schedule ``student_pn`` and every weight copied from a Markov ``teacher``.

    Position embeddings of student scale p are the teacher's rows of scale p; the level
    embedding of p is the teacher's level of p; the attention bias is built for the new schedule.
    The student is on the teacher's device, in train mode.
    """
    check_markov_teacher(teacher)
    t_pn = list(teacher.cfg.patch_nums)
    check_student_schedule(t_pn, student_pn)
    s_pn = [int(p) for p in student_pn]
    level = [t_pn.index(p) for p in s_pn]
    t_slices = teacher.scale_slices()
    student = ScaleTransformer(dataclasses.replace(teacher.cfg, patch_nums=s_pn))
    state = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    state["pos_1LC"] = torch.cat([state["pos_1LC"][:, t_slices[j]] for j in level], dim=1)  # (1, L_s, C)
    state["lvl_embed.weight"] = state["lvl_embed.weight"][level]  # (K_s, C)
    student.load_state_dict(state)
    return student.to(next(teacher.parameters()).device)


def teacher_logits_on_student_inputs(teacher: ScaleTransformer, labels_B: torch.Tensor, x_BLCv: torch.Tensor,
                                     student_pn: Sequence[int]) -> torch.Tensor:
    """The Markov teacher's logits (B, L_s, V) for each student scale, given the student's input.

    Each student scale p gets the teacher's embeddings at the teacher's level and positions of
    p; one forward with a block-diagonal bias over the student's scales is exact because the
    teacher attends within a scale only.

    Args:
        labels_B: class indices (B,), ``num_classes`` = null class.
        x_BLCv: the student's teacher-forcing inputs (B, L_s - p_1^2, Cvae).
        student_pn: the student's schedule (a subsequence of the teacher's).
    """
    check_markov_teacher(teacher)
    t_pn = list(teacher.cfg.patch_nums)
    t_slices = teacher.scale_slices()
    cond_BD = teacher.cond(labels_B)
    B, parts, start = labels_B.shape[0], [], 0
    for k, p in enumerate(student_pn):
        j = t_pn.index(int(p))
        if k == 0:
            h_BnC = cond_BD.unsqueeze(1).expand(B, p * p, -1) + teacher.pos_start.expand(B, -1, -1)
        else:
            h_BnC = teacher.word_embed(x_BLCv[:, start:start + p * p])
            start += p * p
        parts.append(h_BnC + teacher.lvl_embed.weight[j] + teacher.pos_1LC[:, t_slices[j]])
    h_BLC = torch.cat(parts, dim=1)
    if teacher.cfg.masked_objective:  # the ordinary prediction: every token hidden
        h_BLC = h_BLC + teacher.mask_embed
    bias = attn_bias(student_pn, "markov").to(h_BLC.device, h_BLC.dtype)
    for blk, mod in zip(teacher.blocks, teacher.block_modulations(cond_BD)):
        h_BLC = blk(h_BLC, mod, bias)
    return teacher.head(teacher.head_nm(h_BLC, teacher.head_nm.modulation(cond_BD))).float()


def kl_to_teacher(teacher_logits_BLV: torch.Tensor, student_logits_BLV: torch.Tensor,
                  temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, summed over V, mean over tokens."""
    log_t = F.log_softmax(teacher_logits_BLV / temperature, dim=-1)
    log_s = F.log_softmax(student_logits_BLV / temperature, dim=-1)
    kl_BL = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(-1)
    return kl_BL.mean() * temperature**2
