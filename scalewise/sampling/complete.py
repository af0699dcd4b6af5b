"""Look-ahead: complete the scales not yet sampled with the model's most likely tokens.

The full-image estimate of posterior sampling (the scale-wise analogue of DPS's ``x0``
prediction): after scale k's tokens, run the transformer on scales k+1..K-1, taking each
scale's argmax token, and sum every scale's contribution into the latent ``f_hat``. It
leaves the loop's cache as it found it (see :meth:`ScaleRunner.snapshot`). With the Markov
mask each look-ahead scale is one cache-free pass over its own tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from scalewise.sampling.loop import LoopState
from scalewise.sampling.runner import advance_scale


@torch.no_grad()
def complete_scales(state: LoopState, si: int, f_hat_BChw: torch.Tensor, tokens_Bl: torch.Tensor,
                    finished: bool = False,
                    pinned: Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None] | None = None,
                    ) -> torch.Tensor:
    """The latent (B, Cvae, H, W) with scale ``si``'s ``tokens`` (B, p_si^2) added to ``f_hat``
    (scales < si) and scales si+1..K-1 filled with their argmax tokens.

    ``finished``: the loop already closed scale si (``runner.finish_scale``), e.g. from
    ``on_scale_end``; otherwise the look-ahead closes it on its own copy of the cache.
    ``pinned(sj, f_hat)``: (tokens (B, p_sj^2), pinned (B, p_sj^2) bool) that scale sj will
    hold whatever is drawn (e.g. clamped tokens), given the latent of the scales before sj, or
    None; the look-ahead puts them in too, so the estimate is the image the loop will decode.
    """
    model, tok, runner = state.model, state.tokenizer, state.runner
    pn = model.cfg.patch_nums
    B = f_hat_BChw.shape[0]
    snap = runner.snapshot()
    f_hat, h = advance_scale(model, tok, state.cond_BD, si, f_hat_BChw, tokens_Bl.view(B, pn[si], pn[si]),
                             state.use_cfg)
    if si + 1 < len(pn) and not finished:
        runner.finish_scale(si)
    for sj in range(si + 1, len(pn)):
        logits = runner.logits(state.first_input(h), sj, state.cfg_at(sj))
        idx = logits.argmax(-1)
        pin = None if pinned is None else pinned(sj, f_hat)
        if pin is not None:
            idx = torch.where(pin[1], pin[0], idx)
        idx = idx.view(B, pn[sj], pn[sj])
        runner.finish_scale(sj)
        f_hat, h = advance_scale(model, tok, state.cond_BD, sj, f_hat, idx, state.use_cfg)
    runner.restore(snap)
    return f_hat
