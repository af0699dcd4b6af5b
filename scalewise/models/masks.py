"""Attention masks over the token sequence of all scales (pure functions).

Tokens are laid out scale by scale: scale k (0-based) holds ``p_k^2`` tokens, the whole
sequence ``L = sum_k p_k^2``. A query of scale ``i`` may attend to a key of scale ``j`` when

- ``causal`` (VAR):           ``j <= i``            every coarser scale and its own;
- ``markov`` (SRDD):          ``j == i``            its own scale only (block-diagonal);
- ``markov_prev``:            ``i - 1 <= j <= i``   its own scale and the one before.

The input of scale k already carries ``f_hat_{<k}`` (the Markov state), so ``markov`` needs
no KV cache at inference and ``markov_prev`` a cache of the previous scale only.
"""

from __future__ import annotations

from typing import Sequence

import torch

MASK_KINDS = ("causal", "markov", "markov_prev")


def check_mask_kind(kind: str) -> str:
    """Return ``kind`` or raise ValueError listing the allowed kinds."""
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; allowed: {list(MASK_KINDS)}")
    return kind


def scale_ids(patch_nums: Sequence[int]) -> torch.Tensor:
    """Scale index of every token, int64 (L,): ``[0, 1,1,1,1, 2, ...]``."""
    return torch.cat([torch.full((p * p,), k, dtype=torch.long) for k, p in enumerate(patch_nums)])


def allowed(patch_nums: Sequence[int], kind: str) -> torch.Tensor:
    """Boolean (L, L): ``[i, j]`` is True when query token i may attend to key token j."""
    check_mask_kind(kind)
    s = scale_ids(patch_nums)
    q, k = s[:, None], s[None, :]
    if kind == "causal":
        return k <= q
    if kind == "markov":
        return k == q
    return (k <= q) & (k >= q - 1)


def attn_bias(patch_nums: Sequence[int], kind: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive attention bias (L, L): 0 where allowed, -inf where masked."""
    bias = torch.zeros(allowed(patch_nums, kind).shape, dtype=dtype)
    return bias.masked_fill_(~allowed(patch_nums, kind), float("-inf"))


def context_scales(si: int, kind: str) -> range:
    """Scales whose keys/values a query of scale ``si`` needs (what a sampler must cache)."""
    check_mask_kind(kind)
    if kind == "causal":
        return range(0, si + 1)
    if kind == "markov":
        return range(si, si + 1)
    return range(max(0, si - 1), si + 1)
