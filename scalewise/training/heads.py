"""Training of the learned sampling heads on a trained SRDD transformer (library: no params, no MLflow).

Every step draws a batch of coded training images, runs the transformer teacher-forced (with
the true labels and with the null class) and scores three objectives on the heads' outputs:

- **tau**: negative log-likelihood of the ground-truth tokens under ``softmax(logits / tau)``,
  every scale;
- **CFG**: cross-entropy of the ground-truth tokens under the guided logits
  ``(1 + w) cond - w uncond`` with ``w = t_k * m`` (``t_k`` the configured CFG of scale k,
  ``m`` the head's multiplier); the logits are detached, so the gradient reaches the CFG head
  only;
- **policy**: on one scale k >= ``resample_from_scale`` per step, the model's own draws
  ``d ~ p(. | true coarser scales)``; the policy head gives each a re-mask probability
  ``m = sigmoid(score)``, a mask is drawn from it, and the masked tokens are re-predicted
  given the others, ``q``. The loss is minus the ground-truth likelihood of the result,
  ``-(m q(x) + (1 - m) [d = x])`` (the expected accuracy of the position): its gradient
  re-masks where the re-prediction is more likely right than the draw (``q(x) > [d = x]``)
  and keeps the draw otherwise. (Its logarithm would re-mask everything: a kept wrong draw
  has likelihood 0.) ``count_weight * (mean(m) - rho)^2`` holds the re-masked share near the
  group-size head's ``rho`` (and teaches ``rho`` that share).

``freeze_backbone`` (default) trains the heads only: the transformer runs without gradients
and its weights stay bit-identical; otherwise the tau and policy losses fine-tune it too.
"""

from __future__ import annotations

import copy
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from scalewise.core.config import to_dict
from scalewise.core.digest import weights_hash
from scalewise.core.device import resolve_device
from scalewise.models.heads import HeadsConfig, SamplingHeads
from scalewise.models.transformer import ScaleTransformer
from scalewise.sampling.logits import cfg_scale, draw
from scalewise.training import batches, loop, optim, schedule
from scalewise.training.batches import CodedSet
from scalewise.training.loop import Report, Schedule, StepOut, TrainResult, fit
from scalewise.training.resume import Checkpointer, code_of, run_key
from scalewise.training.settings import LoggedSettings, Rule, above, at_least, flag


@dataclass
class HeadsSettings:
    """``train_heads.heads``: the heads' shape (the width comes from the transformer)."""

    hidden: int = 16
    tau_per_token: bool = False
    cfg_per_token: bool = False
    log_range: float = 1.5
    rho_min: float = 0.02
    rho_max: float = 0.5

    def config(self, width: int) -> HeadsConfig:
        return HeadsConfig(width=width, **to_dict(self))


@dataclass
class TrainHeadsConfig(LoggedSettings):
    """``params.yaml: train_heads``."""

    heads: HeadsSettings = field(default_factory=HeadsSettings)
    freeze_backbone: bool = True
    steps: int = 300
    lr: float = 3e-3
    warmup_steps: int = 20
    grad_clip: float = 1.0
    cfg: float = 1.5  # the configured CFG whose per-scale weight the CFG head multiplies
    cfg_schedule: str = "linear"
    resample_from_scale: int = 1  # first scale (0-based) the policy is trained on
    count_weight: float = 0.1  # weight of (mean re-mask probability - rho)^2
    max_param_fraction: float = 0.02  # the heads may add at most this share of the transformer's parameters
    threads: int = 0

    SECTION: ClassVar[str] = "train_heads"
    NOT_IN_KEY: ClassVar[tuple[str, ...]] = LoggedSettings.NOT_IN_KEY + ("threads", "max_param_fraction")

    def rules(self) -> list[Rule]:
        return super().rules() + [flag("freeze_backbone"), above("grad_clip", 0.0), at_least("cfg", 0.0, "number"),
                                  at_least("resample_from_scale", 1), at_least("count_weight", 0.0, "number"),
                                  above("max_param_fraction", 0.0), at_least("threads", 0)]


class _Trainee(nn.Module):
    """What the optimiser sees: the heads, plus the backbone when it is fine-tuned."""

    def __init__(self, heads: SamplingHeads, backbone: ScaleTransformer, freeze: bool):
        super().__init__()
        self.heads = heads
        if freeze:
            object.__setattr__(self, "frozen_backbone", backbone)  # not a sub-module: no params, no state
        else:
            self.backbone = backbone

    @property
    def model(self) -> ScaleTransformer:
        return self.frozen_backbone if hasattr(self, "frozen_backbone") else self.backbone


@contextmanager
def head_input(model: ScaleTransformer) -> Iterator[dict[str, torch.Tensor]]:
    """While open, ``store["h"]`` holds the input (B, L, C) of the vocabulary head of the last forward."""
    store: dict[str, torch.Tensor] = {}
    handle = model.head.register_forward_hook(lambda _m, inp, _out: store.__setitem__("h", inp[0]))
    try:
        yield store
    finally:
        handle.remove()


def heads_losses(heads: SamplingHeads, model: ScaleTransformer, tokens_BL: torch.Tensor, x_BLC: torch.Tensor,
                 labels_B: torch.Tensor, cfg: TrainHeadsConfig, gen: torch.Generator,
                 grad_backbone: bool = False) -> dict[str, torch.Tensor]:
    """The three objectives on one batch (see the module docstring): ``tau``, ``cfg``, ``policy``
    (with its count penalty) and ``loss`` (their sum), each a scalar; plus the diagnostics
    ``tau_mean``, ``cfg_mult_mean``, ``remask_frac`` and ``rho_mean`` (detached)."""
    slices, K = model.scale_slices(), len(model.cfg.patch_nums)
    null_B = torch.full_like(labels_B, model.num_classes)
    with torch.set_grad_enabled(grad_backbone), head_input(model) as store:
        logits_c = model(labels_B, x_BLC)  # (B, L, V)
        hid_c = store["h"]  # (B, L, C)
        with torch.no_grad():
            logits_u = model(null_B, x_BLC)
    out: dict[str, torch.Tensor] = {}
    tau_terms, cfg_terms, taus, mults = [], [], [], []
    for si, sl in enumerate(slices):
        gt_Bl = tokens_BL[:, sl]
        tau = heads.temperature(hid_c[:, sl].detach() if not grad_backbone else hid_c[:, sl])
        tau_terms.append(F.cross_entropy((logits_c[:, sl] / tau).flatten(0, 1), gt_Bl.flatten(), reduction="sum"))
        taus.append(tau.detach().mean())
        t = cfg_scale(cfg.cfg, si, K, cfg.cfg_schedule)
        if t > 0:
            m = heads.cfg_multiplier(hid_c[:, sl].detach())
            w = t * m
            guided = (1 + w) * logits_c[:, sl].detach() - w * logits_u[:, sl]
            cfg_terms.append(F.cross_entropy(guided.flatten(0, 1), gt_Bl.flatten(), reduction="sum"))
            mults.append(m.detach().mean())
    n_tok = tokens_BL.numel()
    out["tau"] = torch.stack(tau_terms).sum() / n_tok
    out["cfg"] = torch.stack(cfg_terms).sum() / n_tok if cfg_terms else logits_c.new_zeros(())
    out["tau_mean"] = torch.stack(taus).mean()
    out["cfg_mult_mean"] = torch.stack(mults).mean() if mults else logits_c.new_ones(())

    # policy: one scale per step, the model's own draws, re-predicted where the sampled mask says
    si = int(torch.randint(min(cfg.resample_from_scale, K - 1), K, (1,), generator=gen))
    sl = slices[si]
    probs_BlV = logits_c[:, sl].detach().float().softmax(-1)
    drawn_Bl = draw(probs_BlV.cpu(), gen).to(tokens_BL.device)
    h_Bl = hid_c[:, sl] if grad_backbone else hid_c[:, sl].detach()
    remask_Bl = torch.sigmoid(heads.policy_scores(h_Bl, probs_BlV, drawn_Bl))
    hidden_Bl = torch.rand(remask_Bl.shape, generator=gen).to(remask_Bl.device) < remask_Bl.detach()
    tok_BL, rev_BL = tokens_BL.clone(), torch.zeros_like(tokens_BL, dtype=torch.bool)
    tok_BL[:, sl], rev_BL[:, sl] = drawn_Bl, ~hidden_Bl
    with torch.set_grad_enabled(grad_backbone):
        q_gt_Bl = model(labels_B, x_BLC, tok_BL, rev_BL)[:, sl].float().softmax(-1).gather(
            -1, tokens_BL[:, sl].unsqueeze(-1)).squeeze(-1)
    hit_Bl = (drawn_Bl == tokens_BL[:, sl]).float()
    lik_Bl = remask_Bl * q_gt_Bl + (1 - remask_Bl) * hit_Bl
    rho_B = heads.group_size(h_Bl)
    count = ((remask_Bl.mean(1) - rho_B) ** 2).mean()
    out["policy"] = -lik_Bl.mean() + cfg.count_weight * count
    out["remask_frac"] = remask_Bl.detach().mean()
    out["rho_mean"] = rho_B.detach().mean()
    out["loss"] = out["tau"] + out["cfg"] + out["policy"]
    return out


def train_heads(cfg: TrainHeadsConfig, model: ScaleTransformer, tokens_NL: torch.Tensor, x_NLCv: torch.Tensor,
                labels_N: torch.Tensor, data_hash: str, state_dir: str | Path,
                on_log: Callable[[int, dict], None] | None = None, progress: bool = True,
                ) -> tuple[TrainResult, SamplingHeads, ScaleTransformer]:
    """Train sampling heads on ``model`` (an SRDD transformer with ``masked_objective``); resumable.

    Returns (the run, the heads in eval mode, the transformer to use them with: ``model``
    itself when frozen, else a fine-tuned copy). ``on_log(step, row)`` receives the averaged
    losses ``loss``, ``tau``, ``cfg``, ``policy`` and the diagnostics of :func:`heads_losses`.

    Raises:
        ValueError: the model has no masked objective, or the heads exceed ``max_param_fraction``.
        FloatingPointError: NaN/inf loss (the last good checkpoint is kept).
    """
    if not model.cfg.masked_objective:
        raise ValueError("train_heads needs a transformer trained with masked_objective: true (the policy is "
                         "trained on masked re-predictions)")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    backbone_hash = weights_hash(model)
    backbone = model.to(device) if cfg.freeze_backbone else copy.deepcopy(model).to(device)
    heads = SamplingHeads(cfg.heads.config(model.cfg.width)).to(device)
    n_model = sum(p.numel() for p in model.parameters())
    if heads.num_params() > cfg.max_param_fraction * n_model:
        raise ValueError(f"train_heads.heads: {heads.num_params()} parameters is more than "
                         f"{cfg.max_param_fraction:.0%} of the transformer's {n_model}: lower heads.hidden")
    if cfg.freeze_backbone:
        backbone.eval().requires_grad_(False)
    trainee = _Trainee(heads, backbone, cfg.freeze_backbone)
    opt = optim.adamw(trainee, cfg.lr, cfg.weight_decay, betas=(0.9, 0.95), no_decay=optim.no_decay_transformer)
    gen = torch.Generator().manual_seed(cfg.seed)
    key_cfg = {"train": cfg.key_settings(), "heads": to_dict(heads.cfg), "backbone": backbone_hash}
    code = code_of(trainee, sys.modules[__name__], batches, loop, optim, schedule)
    ckpt = Checkpointer(state_dir, run_key(key_cfg, data_hash, code), trainee, opt, gen, cfg.ckpt_every)
    data, slices = CodedSet(tokens_NL, x_NLCv, labels_N), backbone.scale_slices()

    def step_fn(step: int) -> StepOut:
        b = data.draw(cfg.batch_size, model.num_classes, 0.0, 0.0, slices, gen, device)
        if cfg.freeze_backbone:
            backbone.eval()
        parts = heads_losses(heads, backbone, b.tokens_BL, b.x_BLC, b.labels_B, cfg, gen,
                             grad_backbone=not cfg.freeze_backbone)

        def row(values: dict[str, float]) -> dict[str, float]:
            return {k: float(v.detach()) for k, v in parts.items()} | values

        return StepOut(parts["loss"], row)

    report = Report("train_heads", "Lower train_heads.lr or raise grad_clip.", cfg.log_every,
                    ("loss", "policy"), on_log, progress)
    result = fit(trainee, opt, Schedule(cfg.steps, cfg.lr, cfg.warmup_steps, cfg.grad_clip), step_fn, report, ckpt)
    backbone.eval()
    return result, heads.eval(), backbone


@torch.no_grad()
def evaluate_heads(heads: SamplingHeads, model: ScaleTransformer, tokens_NL: torch.Tensor, x_NLCv: torch.Tensor,
                   labels_N: torch.Tensor, cfg: TrainHeadsConfig, batch_size: int = 256) -> dict[str, float]:
    """Test-set objectives of ``heads`` beside those of untrained heads (tau = 1, the configured
    CFG, policy at its initialisation), on the same batches and draws: ``{tau, cfg, policy,
    tau_mean, cfg_mult_mean, remask_frac, rho_mean}`` and ``baseline_<name>`` of each loss."""
    device = next(heads.parameters()).device
    torch.manual_seed(cfg.seed)
    plain = SamplingHeads(heads.cfg).to(device).eval()
    sums: dict[str, float] = {}
    n = 0
    for start in range(0, tokens_NL.shape[0], batch_size):
        tok, x, lab = (t[start:start + batch_size].to(device) for t in (tokens_NL, x_NLCv, labels_N))
        for prefix, h in (("", heads), ("baseline_", plain)):
            parts = heads_losses(h, model, tok, x, lab, cfg, torch.Generator().manual_seed(cfg.seed + start))
            keys = ("tau", "cfg", "policy") if prefix else tuple(parts)
            for k in keys:
                sums[prefix + k] = sums.get(prefix + k, 0.0) + float(parts[k]) * tok.shape[0]
        n += tok.shape[0]
    return {k: v / n for k, v in sums.items() if k != "loss"}
