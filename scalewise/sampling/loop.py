"""The one per-scale sampling loop, shared by plain generation, token resampling and posterior
sampling.

Each scale k is one step: the model call (the scale's CFG-combined logits, through the
:class:`ScaleRunner` cache), then the update: ``hooks.on_logits`` (e.g. measurement guidance),
temperature and filters, the seeded draw (or the hook's own draw, ``hooks.draw``), the hook's
pinned tokens (``hooks.pinned``, e.g. clamped ones), resampling (simple or masked, from
``Resample.min_scale`` on; pinned tokens are never re-masked and are revealed to the
re-predictions, which pass ``hooks.on_refine_logits``), ``hooks.on_tokens``, the next scale's
input, ``hooks.on_scale_end`` and ``hooks.reorder`` (e.g. particle resampling: the batch's
rows are permuted, caches included). Random numbers are consumed in that order, so a seed
fixes the whole result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from scalewise.models.heads import SamplingHeads
from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import ScaleTransformer
from scalewise.sampling.adaptive import INFER_MODES, AdaptiveStep, ResamplePolicy, check_infer_mode
from scalewise.sampling.logits import cfg_scale, check_sampling_args, draw, sampling_probs
from scalewise.sampling.resample import Resample, masked_resample, simple_resample
from scalewise.sampling.runner import ScaleRunner, advance_scale, check_pair


@dataclass
class ScaleSettings:
    """How each scale is sampled: CFG (0 = off: no unconditional half), filters, resampling, and
    the learned heads' share (``infer_mode``, see :mod:`scalewise.sampling.adaptive`)."""

    cfg: float = 1.5
    cfg_schedule: str = "linear"  # linear (t = cfg * k/(K-1), VAR) | constant
    top_k: int = 0  # 0 = off
    top_p: float = 0.0  # 0 = off
    temperature: float = 1.0
    resample: Resample = field(default_factory=Resample)
    infer_mode: str = "baseline"  # baseline | policy | guidance | both

    def __post_init__(self) -> None:
        check_sampling_args(self.cfg, self.top_k, self.top_p, self.temperature)
        if self.infer_mode not in INFER_MODES:
            raise ValueError(f"unknown infer_mode {self.infer_mode!r}; allowed: {list(INFER_MODES)}")

    def probs(self, logits_BlV: torch.Tensor, tau: torch.Tensor | None = None) -> torch.Tensor:
        """The distribution (B, l, V) tokens are drawn from; ``tau`` (B, l|1, 1) multiplies the temperature."""
        temperature = self.temperature if tau is None else self.temperature * tau
        return sampling_probs(logits_BlV, temperature, self.top_k, self.top_p)


@dataclass
class LoopState:
    """What a hook may use to run the model itself (e.g. to complete the remaining scales).

    ``runner`` holds the cache of the scales sampled so far; ``cond_BD`` has 2B rows
    ([cond; null]) when ``use_cfg``.
    """

    model: ScaleTransformer
    tokenizer: Tokenizer
    settings: ScaleSettings
    runner: ScaleRunner
    cond_BD: torch.Tensor
    use_cfg: bool

    def cfg_at(self, si: int) -> float | None:
        """The CFG scale of scale ``si`` (None without CFG)."""
        K = len(self.model.cfg.patch_nums)
        return cfg_scale(self.settings.cfg, si, K, self.settings.cfg_schedule) if self.use_cfg else None

    def first_input(self, h_BnC: torch.Tensor) -> torch.Tensor:
        """A scale's first-prediction input: every token masked for a masked-objective model."""
        return h_BnC + self.model.mask_embed if self.model.cfg.masked_objective else h_BnC


class ScaleHooks:
    """Plug-ins of :func:`run_scales`; the defaults change nothing. Subclass and override."""

    def on_bind(self, state: LoopState) -> None:
        """Called once before ``on_start`` with the loop's model, runner and conditioning."""

    def on_start(self) -> None:
        """Called once the conditioning and the first scale's input are ready."""

    def on_logits(self, si: int, p: int, logits_BlV: torch.Tensor, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """Scale ``si`` (p x p tokens): change its logits (B, p*p, V) before the draw.

        ``f_hat_BChw`` (B, Cvae, H, W) holds the scales already sampled. Only the first
        prediction passes here; re-predictions pass :meth:`on_refine_logits`.
        """
        return logits_BlV

    def draw(self, si: int, probs_BlV: torch.Tensor) -> torch.Tensor | None:
        """Scale ``si``'s tokens (B, l) from ``probs``, or None for the loop's own seeded draw."""
        return None

    def pinned(self, si: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(tokens (B, l), pinned (B, l) bool) put in right after the draw, kept by resampling."""
        return None

    def on_refine_logits(self, si: int, p: int, logits_BlV: torch.Tensor, f_hat_BChw: torch.Tensor,
                         tokens_Bl: torch.Tensor, revealed_Bl: torch.Tensor) -> torch.Tensor:
        """A masked re-prediction's logits (B, l, V) given the revealed ``tokens``; change them."""
        return logits_BlV

    def on_tokens(self, si: int, tokens_Bl: torch.Tensor) -> torch.Tensor:
        """Scale ``si``: change its tokens (B, p*p) int64 after the draw and resampling."""
        return tokens_Bl

    def on_scale_end(self, si: int, f_hat_BChw: torch.Tensor | None = None) -> None:
        """Called after scale ``si``'s tokens are added (``f_hat`` holds them) and the next input is built."""

    def reorder(self, si: int) -> torch.Tensor | None:
        """After scale ``si``: a row index (B,) to permute the batch by (particle resampling), or None."""
        return None


@dataclass
class Generation:
    images: torch.Tensor  # (B, C, H, W) in [-1, 1]
    tokens: list[torch.Tensor]  # K index maps (B, p_k, p_k)
    logits: list[torch.Tensor] = field(default_factory=list)  # CFG-combined first-pass logits (B, p_k^2, V)
    resample_iters: list[int] = field(default_factory=list)  # refinement iterations run per scale
    cache_bytes: int = 0
    f_hat: torch.Tensor | None = None  # (B, Cvae, H, W) the summed latent the images decode from


@torch.no_grad()
def run_scales(model: ScaleTransformer, tokenizer: Tokenizer, labels_B: torch.Tensor, settings: ScaleSettings,
               generator: torch.Generator, hooks: ScaleHooks | None = None,
               return_logits: bool = False, heads: SamplingHeads | None = None,
               policy: ResamplePolicy | None = None,
               on_scale_done: Callable[[int], None] | None = None) -> Generation:
    """Sample every scale of a batch and decode it.

    Args:
        labels_B: class indices (B,) int64 in [0, num_classes] (num_classes = the null class,
            for unconditional sampling with ``settings.cfg = 0``).
        generator: the source of every random number (draws, resampling, hooks that share it).
        hooks: :class:`ScaleHooks` (guidance, clamping, timing); grad mode is off in the loop.
        return_logits: keep each scale's CFG-combined logits, before ``hooks.on_logits``.
        heads: the learned sampling heads that ``settings.infer_mode`` other than ``baseline`` uses.
        policy: a re-masking rule for ``infer_mode`` ``policy`` / ``both`` in place of the heads'
            (e.g. :class:`~scalewise.sampling.adaptive.ThresholdPolicy`).
        on_scale_done: called with each scale's index once it is sampled (progress bars).
    Returns: a :class:`Generation` (images in [-1, 1], (B, C, H, W)).
    """
    check_pair(model, tokenizer)
    rs = settings.resample
    rs.check_model(model)
    mode = settings.infer_mode
    check_infer_mode(mode, heads is not None or (mode == "policy" and policy is not None), rs.kind)
    adaptive = AdaptiveStep(heads, mode, policy) if mode != "baseline" else None
    hooks = hooks or ScaleHooks()
    pn = model.cfg.patch_nums
    B = labels_B.shape[0]
    use_cfg = settings.cfg > 0
    all_labels = torch.cat((labels_B, torch.full_like(labels_B, model.num_classes))) if use_cfg else labels_B
    cond_BD = model.cond(all_labels)
    runner = ScaleRunner(model, cond_BD)
    state = LoopState(model, tokenizer, settings, runner, cond_BD, use_cfg)
    H = tokenizer.patch_nums[-1]
    f_hat = cond_BD.new_zeros(B, tokenizer.cfg.cvae, H, H)
    h = model.embed_inputs(cond_BD, None, model.scale_slices()[0])
    out = Generation(images=None, tokens=[])  # type: ignore[arg-type]
    hooks.on_bind(state)
    hooks.on_start()
    for si, p in enumerate(pn):
        base = h
        t = state.cfg_at(si)
        tau, hid = None, None
        if adaptive is None:
            logits = runner.logits(state.first_input(base), si, t)
        else:
            logits, tau, hid = adaptive.logits(model, runner.hidden(state.first_input(base), si), t)
        if return_logits:
            out.logits.append(logits)
        probs = settings.probs(hooks.on_logits(si, p, logits, f_hat), tau)
        tokens = hooks.draw(si, probs)
        if tokens is None:
            tokens = draw(probs, generator)
        pinned = hooks.pinned(si)
        keep = None
        if pinned is not None:
            tokens, keep = torch.where(pinned[1], pinned[0], tokens), pinned[1]
        iters = 0
        if rs.kind == "simple" and si >= rs.min_scale:
            tokens, iters = simple_resample(probs, tokens, rs.threshold, rs.iters, generator, keep)
        elif rs.kind == "masked" and si >= rs.min_scale:
            t_refine = t if use_cfg and rs.use_cfg else None
            f_prev = f_hat
            chooser = adaptive.policy if adaptive is not None else None
            if chooser is not None:
                chooser.start(hid)

            def repredict(tokens_Bl: torch.Tensor, revealed_Bl: torch.Tensor) -> torch.Tensor:
                tok2, rev2 = (tokens_Bl.repeat(2, 1), revealed_Bl.repeat(2, 1)) if use_cfg else (tokens_Bl, revealed_Bl)
                h2 = base + model.reveal_embed(tok2, rev2)
                # refinement with CFG rows: the conditional rows
                if adaptive is None:
                    logits2, tau2 = runner.logits(h2, si, t_refine, refine=True)[:B], None
                else:
                    logits2, tau2, hid2 = adaptive.logits(model, runner.hidden(h2, si, refine=True), t_refine)
                    logits2, tau2 = logits2[:B], None if tau2 is None else tau2[:B]
                    if chooser is not None:
                        chooser.update(~revealed_Bl, hid2[:B])
                return settings.probs(hooks.on_refine_logits(si, p, logits2, f_prev, tokens_Bl, revealed_Bl), tau2)

            tokens, iters = masked_resample(probs, tokens, rs.threshold, rs.iters, generator, repredict,
                                            keep, rs.select, rs.fraction,
                                            chooser.select if chooser is not None else None)
        out.resample_iters.append(iters)
        tokens = hooks.on_tokens(si, tokens)
        runner.finish_scale(si)
        idx_Bhw = tokens.view(B, p, p)
        out.tokens.append(idx_Bhw)
        f_hat, h = advance_scale(model, tokenizer, cond_BD, si, f_hat, idx_Bhw, use_cfg)
        hooks.on_scale_end(si, f_hat)
        order = hooks.reorder(si)
        if order is not None:
            f_hat, h, out.tokens = _reorder(order, runner, f_hat, h, out.tokens, use_cfg)
        if on_scale_done is not None:
            on_scale_done(si)
    out.images = tokenizer.f_to_img(f_hat)
    out.f_hat = f_hat
    out.cache_bytes = runner.cache_bytes
    return out


def _reorder(order_B: torch.Tensor, runner: ScaleRunner, f_hat: torch.Tensor, h: torch.Tensor | None,
             tokens: list[torch.Tensor], use_cfg: bool) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
    """Permute the batch's rows by ``order`` (B,): latent, next input, tokens and the runner's cache."""
    B = f_hat.shape[0]
    rows = torch.cat((order_B, order_B + B)) if use_cfg else order_B
    runner.reorder(rows)
    return f_hat[order_B], None if h is None else h[rows], [t[order_B] for t in tokens]
