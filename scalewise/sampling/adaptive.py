"""Inference modes with learned sampling heads (:class:`~scalewise.models.heads.SamplingHeads`).

``infer_mode`` switches them for ablations:

- ``baseline``: the configured temperature, CFG and resampling (no heads);
- ``guidance``: the heads' temperature and CFG multipliers on the configured values;
- ``policy``: masked resampling re-masks the tokens the policy head picks, as many as the
  group-size head says, and stops when it says fewer than ``rho_min`` (replaces the fixed
  ``p(token) < threshold``; ``resample.iters`` is the most iterations);
- ``both``: policy and guidance.

The CFG mix with a per-row / per-token weight ``w = t * m`` is computed like the fixed one,
``(1 + w) cond - w uncond`` on the hidden states, with ``w`` in float64 first, so that a
multiplier of exactly 1 gives bit-identical logits.
"""

from __future__ import annotations

from typing import Protocol

import torch

from scalewise.models.heads import SamplingHeads
from scalewise.sampling.logits import combine_cfg

INFER_MODES = ("baseline", "policy", "guidance", "both")


def check_infer_mode(mode: str, has_heads: bool, resample_kind: str = "masked") -> None:
    """Raise ValueError for an unknown ``mode``, a mode that needs heads without them, or
    ``policy`` / ``both`` without masked resampling."""
    if mode not in INFER_MODES:
        raise ValueError(f"unknown infer_mode {mode!r}; allowed: {list(INFER_MODES)}")
    if mode != "baseline" and not has_heads:
        raise ValueError(f"infer_mode {mode!r} needs sampling heads, and this model has none: train them "
                         "(dvc repro train_heads) and pass the heads file (e.g. --heads models/srdd_heads.pt), "
                         "or use infer_mode 'baseline'")
    if uses_policy(mode) and resample_kind != "masked":
        raise ValueError(f"infer_mode {mode!r} re-masks tokens with the learned policy inside masked resampling: "
                         f"set resample kind 'masked' (got {resample_kind!r}); its iters are the most iterations")


def uses_policy(mode: str) -> bool:
    return mode in ("policy", "both")


def uses_guidance(mode: str) -> bool:
    return mode in ("guidance", "both")


def cfg_mix(hid_2BlC: torch.Tensor, t: float, mult_Bl1: torch.Tensor) -> torch.Tensor:
    """``(1 + w) cond - w uncond`` (B, l, C) from [cond; uncond] rows (2B, l, C), ``w = t * mult``
    with ``mult`` (B, l, 1) or (B, 1, 1)."""
    cond, uncond = hid_2BlC.chunk(2)
    w = t * mult_Bl1.double()
    return cond * (1 + w).to(cond.dtype) - uncond * w.to(cond.dtype)


def policy_select(scores_Bl: torch.Tensor, cut: float, rho_B: torch.Tensor | None = None, rho_min: float = 0.0,
                  keep_Bl: torch.Tensor | None = None) -> torch.Tensor:
    """The positions (B, l) bool to re-mask: scores above ``cut``, outside ``keep``.

    With a group size ``rho`` (B,) in [0, 1], at most ``ceil(rho * l)`` of them, the highest
    scores first (ties by position); a row whose ``rho`` is below ``rho_min`` re-masks nothing
    (it stops). ``rho=None``: every score above the cut (the fixed rule).
    """
    low = scores_Bl > cut
    if keep_Bl is not None:
        low &= ~keep_Bl
    if rho_B is None:
        return low
    l = scores_Bl.shape[1]
    n_B = (rho_B.float() * l).ceil().long()
    s = scores_Bl.float().masked_fill(~low, float("-inf"))
    rank_Bl = (-s).argsort(dim=1, stable=True).argsort(dim=1)
    return low & (rank_Bl < n_B.unsqueeze(1)) & (rho_B >= rho_min).unsqueeze(1)


class ResamplePolicy(Protocol):
    """Which drawn tokens of a scale masked resampling re-predicts, iteration by iteration."""

    def start(self, hid_BlC: torch.Tensor) -> None:
        """The scale's first prediction: its conditional hidden states (B, l, C)."""

    def update(self, low_Bl: torch.Tensor, hid_BlC: torch.Tensor) -> None:
        """The re-predicted positions (B, l) and the re-prediction's hidden states (B, l, C)."""

    def select(self, probs_BlV: torch.Tensor, tokens_Bl: torch.Tensor, keep_Bl: torch.Tensor | None) -> torch.Tensor:
        """Positions (B, l) bool to re-mask given each token's distribution ``probs`` (B, l, V)."""


class ThresholdPolicy:
    """The fixed rule as a policy: score ``1 - p(token)``, cut ``1 - threshold``, no group size."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def start(self, hid_BlC: torch.Tensor) -> None:
        pass

    def update(self, low_Bl: torch.Tensor, hid_BlC: torch.Tensor) -> None:
        pass

    def select(self, probs_BlV: torch.Tensor, tokens_Bl: torch.Tensor, keep_Bl: torch.Tensor | None) -> torch.Tensor:
        p_Bl = probs_BlV.gather(-1, tokens_Bl.unsqueeze(-1)).squeeze(-1)
        return policy_select(1 - p_Bl, 1 - self.threshold, keep_Bl=keep_Bl)


class HeadsPolicy:
    """The learned rule: the policy head's logits above 0, at most the group-size head's share.

    Each token is scored from the hidden state of the pass that predicted it.
    """

    def __init__(self, heads: SamplingHeads):
        self.heads = heads
        self.hid_BlC: torch.Tensor | None = None

    def start(self, hid_BlC: torch.Tensor) -> None:
        self.hid_BlC = hid_BlC

    def update(self, low_Bl: torch.Tensor, hid_BlC: torch.Tensor) -> None:
        self.hid_BlC = torch.where(low_Bl.unsqueeze(-1), hid_BlC, self.hid_BlC)

    def select(self, probs_BlV: torch.Tensor, tokens_Bl: torch.Tensor, keep_Bl: torch.Tensor | None) -> torch.Tensor:
        scores_Bl = self.heads.policy_scores(self.hid_BlC, probs_BlV, tokens_Bl)
        rho_B = self.heads.group_size(self.hid_BlC)
        return policy_select(scores_Bl, 0.0, rho_B, self.heads.cfg.rho_min, keep_Bl)


class AdaptiveStep:
    """A scale's logits and temperature multiplier under an ``infer_mode`` (see the module doc)."""

    def __init__(self, heads: SamplingHeads | None, mode: str, policy: ResamplePolicy | None = None):
        self.heads, self.mode = heads, mode
        self.guidance = uses_guidance(mode)
        self.policy = policy if policy is not None else (HeadsPolicy(heads) if uses_policy(mode) and heads else None)

    def logits(self, model: torch.nn.Module, hid_BnC: torch.Tensor, t: float | None
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(logits (B, l, V), temperature multiplier (B, l|1, 1) or None, conditional hidden (B, l, C))
        from the final hidden states of every row (2B with CFG: [cond; uncond])."""
        cond_BlC = hid_BnC.chunk(2)[0] if t is not None else hid_BnC
        tau = None
        if self.guidance:
            tau = self.heads.temperature(cond_BlC)
            mixed = cfg_mix(hid_BnC, t, self.heads.cfg_multiplier(cond_BlC)) if t is not None else hid_BnC
        else:  # the fixed CFG, exactly as ScaleRunner.logits mixes it
            mixed = combine_cfg(hid_BnC, t) if t is not None else hid_BnC
        return model.head(mixed).float(), tau, cond_BlC
