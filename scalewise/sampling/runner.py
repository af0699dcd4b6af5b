"""The transformer one scale at a time, and the step from a scale's tokens to the next input.

Cache per mask kind (what a query of scale k needs, :func:`masks.context_scales`):
``causal`` keeps every earlier scale's keys/values, ``markov`` keeps nothing (one forward over
the scale's own tokens), ``markov_prev`` keeps only the previous scale. Conditional and
unconditional (null-class) halves share one batched forward; each block's AdaLN modulation is
computed once per sample before the first scale.
"""

from __future__ import annotations

import torch

from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import KVSlot, ScaleTransformer
from scalewise.sampling.logits import combine_cfg


def check_pair(model: ScaleTransformer, tokenizer: Tokenizer) -> None:
    """Raise ValueError unless the transformer and the tokenizer share patch_nums, V and Cvae."""
    ours = (list(model.cfg.patch_nums), model.cfg.vocab_size, model.cfg.cvae)
    theirs = (list(tokenizer.patch_nums), tokenizer.cfg.vocab_size, tokenizer.cfg.cvae)
    if ours != theirs:
        raise ValueError(
            f"transformer (patch_nums, V, Cvae) = {ours} does not match the tokenizer's {theirs}: "
            "use the tokenizer the transformer was trained with"
        )


class ScaleRunner:
    """Runs the transformer one scale at a time with the cache the mask kind needs."""

    def __init__(self, model: ScaleTransformer, cond_BD: torch.Tensor):
        self.model = model
        self.kind = model.cfg.mask_kind
        self.pn = model.cfg.patch_nums
        self.slices = model.scale_slices()
        self.cond_BD = cond_BD
        self.mods = model.block_modulations(cond_BD)  # once per sample
        self.head_mod = model.head_nm.modulation(cond_BD)
        B, H, hd = cond_BD.shape[0], model.cfg.heads, model.cfg.width // model.cfg.heads
        if self.kind == "causal":
            capacity = model.cfg.num_tokens
        elif self.kind == "markov_prev":
            capacity = max(a * a + b * b for a, b in zip([0] + self.pn[:-1], self.pn))
        else:
            capacity = 0
        dev = cond_BD.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else cond_BD.dtype
        self.slots = [KVSlot(B, H, capacity, hd, dtype, cond_BD.device) for _ in model.blocks] if capacity else None

    @property
    def cache_bytes(self) -> int:
        return sum(s.nbytes for s in self.slots) if self.slots else 0

    def _place(self, si: int, frozen: bool) -> None:
        if not self.slots:
            return
        if self.kind == "causal":  # every earlier scale, at its place in the sequence
            read_from, write_at = 0, self.slices[si].start
        else:  # markov_prev: the previous scale is kept at [0, n_prev)
            read_from, write_at = 0, (self.pn[si - 1] ** 2 if si > 0 else 0)
        for slot in self.slots:
            slot.read_from, slot.write_at, slot.frozen = read_from, write_at, frozen

    def _shift_prev(self, si: int) -> None:
        """markov_prev: after scale si, its keys/values become the 'previous scale' at [0, n)."""
        if self.kind != "markov_prev" or not self.slots:
            return
        start = self.pn[si - 1] ** 2 if si > 0 else 0
        n = self.pn[si] ** 2
        for slot in self.slots:
            slot.k[:, :, :n] = slot.k[:, :, start:start + n].clone()
            slot.v[:, :, :n] = slot.v[:, :, start:start + n].clone()

    def hidden(self, h_BnC: torch.Tensor, si: int, refine: bool = False) -> torch.Tensor:
        """Final hidden states (B', n, C) of scale ``si`` (after ``head_nm``: the vocabulary head's
        input) given its input embeddings (B', n, C). ``refine``: a re-prediction of the same
        scale (the cache is read, not written)."""
        self._place(si, frozen=refine)
        for i, blk in enumerate(self.model.blocks):
            h_BnC = blk(h_BnC, self.mods[i], None, self.slots[i] if self.slots else None)
        return self.model.head_nm(h_BnC, self.head_mod)

    def logits(self, h_BnC: torch.Tensor, si: int, t: float | None = None, refine: bool = False) -> torch.Tensor:
        """Logits of scale ``si`` given its input embeddings (B', n, C).

        With ``t`` (CFG on, rows = [cond; uncond]) the guided logits (B'/2, n, V) are returned.
        The head is linear, so guiding its input, ``head((1+t) h_c - t h_u)``, equals guiding
        its output and halves the head's work. ``t=None``: raw logits of every row (B', n, V).
        ``refine``: a re-prediction of the same scale (the cache is read, not written).
        """
        h_BnC = self.hidden(h_BnC, si, refine)
        if t is not None:
            h_BnC = combine_cfg(h_BnC, t)
        return self.model.head(h_BnC).float()

    def finish_scale(self, si: int) -> None:
        self._shift_prev(si)

    def reorder(self, rows: torch.Tensor) -> None:
        """Permute the batch rows (B',) of the conditioning, modulations and cache (particle resampling)."""
        self.cond_BD = self.cond_BD[rows]
        self.mods = [m[rows] for m in self.mods]
        self.head_mod = self.head_mod[rows]
        for slot in self.slots or []:
            slot.k, slot.v = slot.k[rows], slot.v[rows]

    def snapshot(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """A copy of the cache, for a look-ahead that must leave no trace (:meth:`restore`).

        ``causal`` needs none: a look-ahead only writes later scales' slots, which are
        rewritten before they are read. ``markov`` has no cache.
        """
        if self.kind != "markov_prev" or not self.slots:
            return None
        return [(s.k.clone(), s.v.clone()) for s in self.slots]

    def restore(self, snap: list[tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        if snap is None:
            return
        for slot, (k, v) in zip(self.slots or [], snap):
            slot.k.copy_(k)
            slot.v.copy_(v)


def advance_scale(model: ScaleTransformer, tokenizer: Tokenizer, cond_BD: torch.Tensor, si: int,
                  f_hat_BChw: torch.Tensor, idx_Bhw: torch.Tensor, use_cfg: bool,
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Add scale ``si``'s sampled tokens (B, p, p) to ``f_hat`` (B, Cvae, H, W).

    Returns the new ``f_hat`` and the next scale's input embeddings (B', n, C), rows doubled
    for the null class when ``use_cfg``; None after the last scale.
    """
    f_hat_BChw, next_BChw = tokenizer.next_scale_input(si, f_hat_BChw, tokenizer.quantize.embed(idx_Bhw))
    if si + 1 >= len(model.cfg.patch_nums):
        return f_hat_BChw, None
    x_BlCv = next_BChw.flatten(2).transpose(1, 2)  # (B, n, Cvae)
    if use_cfg:
        x_BlCv = x_BlCv.repeat(2, 1, 1)
    return f_hat_BChw, model.embed_inputs(cond_BD, x_BlCv, model.scale_slices()[si + 1])
