"""Token clamping (VAR-style zero-shot editing): the observation's known tokens per scale.

The observation is completed to a full image first (:func:`complete_observation`: masks get
every unobserved pixel filled by biharmonic inpainting; other kinds use the operator's
pseudo-inverse) and encoded; the plan then says which of those tokens to trust.
For masks, a token is known where ``known_fraction`` or more of its footprint is observed, or
where its footprint holds at least ``min_observed`` observed pixels; for super-resolution and
deblurring, every token of the scales below the measurement's Nyquist limit is known.

Two ways to fill a known position (``clamp_mode``):

- ``encoded`` (VAR-style zero-shot editing, the ``clamp`` baseline): the token of the completed
  observation's own encoding;
- ``residual``: the token the tokenizer's quantizer would pick for the observation's latent
  *given the sample's coarser scales*, ``nearest(area_down(E(obs) - f_hat_<k))``. In a residual
  tokenizer a fine token only means something relative to the coarser ones; when the sample's
  coarse tokens differ from the observation's (they are drawn, or guided), the encoded fine
  tokens no longer add up to the observation, the residual ones do.
"""

from __future__ import annotations

import torch

from scalewise.models.quantizer import nearest_code
from scalewise.models.tokenizer import Tokenizer, area_down
from scalewise.posterior.classical import biharmonic_inpaint
from scalewise.posterior.fill import harmonic_fill
from scalewise.posterior.measurements import Operator


CLAMP_FILLS = ("biharmonic", "harmonic")


@torch.no_grad()
def complete_observation(operator: Operator, y: torch.Tensor, fill: str = "biharmonic") -> torch.Tensor:
    """The observation as a full image (B, C, H, W) in [-1, 1]: what :func:`clamp_plan` encodes.

    Mask kinds: ``y`` with every unobserved pixel filled (a smooth continuation of the observed
    pixels, so an outpainted half continues the background instead of turning mid-grey), by
    ``fill``: ``biharmonic`` (scikit-image, image by image for per-image masks) or ``harmonic``
    (:func:`~scalewise.posterior.fill.harmonic_fill`, batched torch, no overshoot). Other kinds:
    the operator's pseudo-inverse.
    """
    if fill not in CLAMP_FILLS:
        raise ValueError(f"clamp fill={fill!r}; allowed: {list(CLAMP_FILLS)}")
    obs = operator.pinv(y)
    mask = operator.known_mask()
    if mask is not None:
        fill_fn = biharmonic_inpaint if fill == "biharmonic" else harmonic_fill
        obs = fill_fn(obs, mask.to(obs))
    return obs.clamp(-1, 1)


@torch.no_grad()
def clamp_plan(tokenizer: Tokenizer, operator: Operator, y: torch.Tensor, known_fraction: float = 0.5,
               min_observed: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per scale: (tokens (B, p*p), known (B, p*p) bool) from encoding the completed observation.

    Mask kinds: a token of a p x p scale covers a footprint of ``(H / p)^2`` pixels. It is known
    when (1) at least ``known_fraction`` of its footprint is observed, or (2) its footprint holds
    at least ``min_observed`` observed pixels (0 turns rule 2 off): many observed pixels pin a
    coarse token down even when they are a small fraction of it (a random mask with 30% observed
    has no footprint at 50%). Other kinds: every token of the scales with ``p / p_last <=
    operator.band`` is known.
    """
    return ClampPlan.build(tokenizer, operator, y, known_fraction, min_observed).encoded


def _known_tokens(tokenizer: Tokenizer, operator: Operator, obs_BCHW: torch.Tensor, latent_BChw: torch.Tensor,
                  known_fraction: float, min_observed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`clamp_plan` of a completed observation ``obs`` (B, C, H, W) and its encoder output
    ``latent`` (B, Cvae, h, w)."""
    obs = obs_BCHW
    mask = operator.known_mask()
    if mask is not None:
        mask = mask.to(obs)
    idx_maps = tokenizer.quantize(latent_BChw).idx_maps
    pn = tokenizer.patch_nums
    size = obs.shape[-1]
    plan = []
    for si, p in enumerate(pn):
        tokens = idx_maps[si].flatten(1)
        if mask is not None:
            frac = area_down(mask.expand(obs.shape[0], 1, -1, -1), p).flatten(1)  # (B, p*p) observed fraction
            known = frac >= known_fraction - 1e-6
            if min_observed > 0:
                observed = frac * (size / p) ** 2  # observed pixels per footprint
                known = known | (observed >= min_observed - 1e-3)
        else:
            full = p / pn[-1] <= operator.band + 1e-6
            known = torch.full_like(tokens, full, dtype=torch.bool)
        plan.append((tokens, known))
    return plan


CLAMP_MODES = ("encoded", "residual")
CLAMP_SCALES = ("all", "unguided")  # which scales clamping holds when guidance runs too


class ClampPlan:
    """Per scale, the known positions of an observation and the tokens clamped there.

    ``latent`` (B, Cvae, H, W) is the completed observation's encoder output, the target of
    ``residual`` clamping; ``encoded`` holds each scale's (tokens (B, p*p), known (B, p*p) bool).
    """

    def __init__(self, tokenizer: Tokenizer, encoded: list[tuple[torch.Tensor, torch.Tensor]],
                 latent: torch.Tensor, mode: str = "encoded"):
        if mode not in CLAMP_MODES:
            raise ValueError(f"clamp_mode={mode!r}; allowed: {list(CLAMP_MODES)}")
        self.tokenizer, self.encoded, self.latent, self.mode = tokenizer, encoded, latent, mode

    @classmethod
    @torch.no_grad()
    def build(cls, tokenizer: Tokenizer, operator: Operator, y: torch.Tensor, known_fraction: float = 0.5,
              min_observed: int = 8, mode: str = "encoded", fill: str = "biharmonic") -> "ClampPlan":
        """The plan of measurements ``y`` (B, ...): see :func:`clamp_plan` for which tokens are known
        and :func:`complete_observation` for ``fill``."""
        if not 0.0 < known_fraction <= 1.0:
            raise ValueError(f"known_fraction must lie in (0, 1], got {known_fraction}")
        if min_observed < 0:
            raise ValueError(f"min_observed must be >= 0 observed pixels (0 turns the rule off), got {min_observed}")
        obs = complete_observation(operator, y, fill)  # one fill and one encoder pass for the tokens and the latent
        latent = tokenizer.img_to_f(obs.to(next(tokenizer.parameters()).dtype))  # the weights may be bf16
        return cls(tokenizer, _known_tokens(tokenizer, operator, obs, latent, known_fraction, min_observed), latent,
                   mode)

    @torch.no_grad()
    def at(self, si: int, f_hat_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale ``si``'s (tokens (B, p*p), known (B, p*p) bool), given the sample's latent
        ``f_hat`` (B, Cvae, H, W) of the scales before si (used by ``residual`` only)."""
        tokens, known = self.encoded[si]
        if self.mode == "encoded" or not bool(known.any()):
            return tokens, known
        p = self.tokenizer.patch_nums[si]
        rest = area_down(self.latent - f_hat_BChw.to(self.latent), p)
        B, C = rest.shape[:2]
        idx = nearest_code(rest.permute(0, 2, 3, 1).reshape(-1, C), self.tokenizer.quantize.embedding.weight)
        return idx.view(B, p * p).to(tokens.device), known

    def select(self, rows: torch.Tensor) -> "ClampPlan":
        """The plan of the measurements ``rows`` (R,) (e.g. particles: each row repeated N times)."""
        enc = [(t[rows.to(t.device)], k[rows.to(k.device)]) for t, k in self.encoded]
        return ClampPlan(self.tokenizer, enc, self.latent[rows.to(self.latent.device)], self.mode)


def clamp_tokens(tokens_Bl: torch.Tensor, planned: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``tokens`` (B, l) with the plan's known tokens put in: one scale of :func:`clamp_plan`."""
    known_tokens_Bl, known_Bl = planned
    return torch.where(known_Bl, known_tokens_Bl, tokens_Bl)
