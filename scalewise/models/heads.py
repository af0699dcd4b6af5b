"""Learned sampling heads of a scale transformer: resampling policy, group size, temperature, CFG.

Small MLPs that read the transformer's final hidden states (after ``head_nm``, the input of the
vocabulary head) of one scale, ``h_BlC`` (B, l = p*p, C):

- ``policy``: a "re-mask this token" logit per token, from the token's hidden state and two
  features of its draw (log-probability of the drawn token, entropy of its distribution);
  replaces ``p(token) < threshold`` of fixed masked resampling.
- ``group``: the fraction ``rho`` of the scale to re-mask per iteration, in ``[0, rho_max]``
  from the mean-pooled hidden state; sampling bounds it to ``[rho_min, rho_max]`` and stops a
  row's iterations once the head says less than ``rho_min``.
- ``tau``: a temperature multiplier in ``[exp(-log_range), exp(log_range)]``, one per image and
  scale (pooled) or one per token (``tau_per_token``).
- ``cfg``: a multiplier of the configured CFG weight of the scale, same range and switch
  (``cfg_per_token``).

The last layer of ``tau`` and ``cfg`` starts at zero, so an untrained head gives exactly 1:
the configured temperature and CFG (sampling with it reproduces baseline sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from scalewise.core.config import ConfigError


@dataclass
class HeadsConfig:
    """Architecture of :class:`SamplingHeads`; ``width`` is the transformer's (C)."""

    width: int
    hidden: int = 16  # MLP hidden units of every head
    tau_per_token: bool = False  # tau: one per token, else one per image and scale
    cfg_per_token: bool = False  # CFG multiplier: one per token, else one per image and scale
    log_range: float = 1.5  # tau and the CFG multiplier lie in [exp(-r), exp(r)]
    rho_min: float = 0.02  # group size: fewer than this share re-masked = stop the iterations
    rho_max: float = 0.5  # group size: at most this share of a scale re-masked per iteration

    def __post_init__(self) -> None:
        if self.width < 1 or self.hidden < 1:
            raise ConfigError(f"heads width and hidden must be >= 1, got {self.width}, {self.hidden}")
        if not self.log_range > 0:
            raise ConfigError(f"heads log_range must be > 0, got {self.log_range}")
        if not 0.0 <= self.rho_min < self.rho_max <= 1.0:
            raise ConfigError(f"heads need 0 <= rho_min < rho_max <= 1, got {self.rho_min}, {self.rho_max}")


def _mlp(n_in: int, hidden: int, zero_last: bool) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, 1))
    if zero_last:
        nn.init.zeros_(net[2].weight)
        nn.init.zeros_(net[2].bias)
    return net


class SamplingHeads(nn.Module):
    """The four heads; see the module docstring for what each reads and returns."""

    POLICY_FEATURES = 2  # log p(drawn token), entropy of the token's distribution (nats)

    def __init__(self, cfg: HeadsConfig):
        super().__init__()
        self.cfg = cfg
        C, n = cfg.width, cfg.hidden
        self.policy = _mlp(C + self.POLICY_FEATURES, n, zero_last=False)
        self.group = _mlp(C, n, zero_last=False)
        self.tau = _mlp(C, n, zero_last=True)
        self.cfg_scale = _mlp(C, n, zero_last=True)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _multiplier(self, net: nn.Module, h_BlC: torch.Tensor, per_token: bool) -> torch.Tensor:
        x = h_BlC.float() if per_token else h_BlC.float().mean(1, keepdim=True)
        r = self.cfg.log_range
        return torch.exp(r * torch.tanh(net(x) / r))  # (B, l or 1, 1); exactly 1 at a zero output

    def temperature(self, h_BlC: torch.Tensor) -> torch.Tensor:
        """Temperature multiplier (B, l, 1) per token or (B, 1, 1) per image and scale, float32."""
        return self._multiplier(self.tau, h_BlC, self.cfg.tau_per_token)

    def cfg_multiplier(self, h_BlC: torch.Tensor) -> torch.Tensor:
        """Multiplier (B, l, 1) or (B, 1, 1) of the scale's configured CFG weight, float32."""
        return self._multiplier(self.cfg_scale, h_BlC, self.cfg.cfg_per_token)

    def policy_scores(self, h_BlC: torch.Tensor, probs_BlV: torch.Tensor, tokens_Bl: torch.Tensor) -> torch.Tensor:
        """Re-mask logits (B, l) of the drawn ``tokens`` given their distribution ``probs``."""
        return self.policy(torch.cat((h_BlC.float(), draw_features(probs_BlV, tokens_Bl)), -1)).squeeze(-1)

    def group_size(self, h_BlC: torch.Tensor) -> torch.Tensor:
        """Share of the scale (B,) to re-mask this iteration, in [0, rho_max]."""
        return self.cfg.rho_max * torch.sigmoid(self.group(h_BlC.float().mean(1))).squeeze(-1)


def draw_features(probs_BlV: torch.Tensor, tokens_Bl: torch.Tensor) -> torch.Tensor:
    """(B, l, 2) float32: log-probability of each drawn token and the entropy of its distribution."""
    p = probs_BlV.float()
    logp_Bl = p.gather(-1, tokens_Bl.unsqueeze(-1)).clamp_min(1e-12).log()
    ent_Bl1 = -(p * p.clamp_min(1e-12).log()).sum(-1, keepdim=True)
    return torch.cat((logp_Bl, ent_Bl1), -1)
