"""Training batches of the next-scale transformers: the coded training set, label dropout and
the masked objective's rows (shared by transformer training and distillation).

The training set is encoded once: per image, the K index maps flattened to ``tokens_NL``
(int64, L = sum p_k^2) and the teacher-forcing inputs ``x_NLCv`` (float, L - p_1^2, Cvae).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from scalewise.core.images import to_unit
from scalewise.models.tokenizer import Tokenizer


@torch.no_grad()
def encode_dataset(tokenizer: Tokenizer, images_u8: torch.Tensor, batch_size: int = 256,
                   progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) -> (tokens (N, L) int64, teacher-forcing inputs (N, L - p_1^2, Cvae))."""
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    toks, xs = [], []
    for start in tqdm(range(0, images_u8.shape[0], batch_size), desc="encode", disable=not progress):
        idx_maps = tokenizer.encode(to_unit(images_u8[start:start + batch_size]).to(device))
        toks.append(torch.cat([i.flatten(1) for i in idx_maps], dim=1).cpu())
        xs.append(tokenizer.teacher_forcing_input(idx_maps).cpu())
    return torch.cat(toks), torch.cat(xs)


def masked_batch(tokens_BL: torch.Tensor, slices: list[slice], masked_prob: float,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked objective: (revealed (B, L) bool, scored (B, L) bool).

    A fraction ``masked_prob`` of rows pick one scale k >= 2 and reveal a uniform-random
    fraction of its tokens; they are scored on that scale's hidden tokens only. Other rows
    reveal nothing and are scored on every token.
    """
    B, L = tokens_BL.shape
    revealed = torch.zeros(B, L, dtype=torch.bool)
    scored = torch.ones(B, L, dtype=torch.bool)
    rows = (torch.rand(B, generator=gen) < masked_prob).nonzero().flatten().tolist()
    for b in rows:
        sl = slices[int(torch.randint(1, len(slices), (1,), generator=gen))]
        n = sl.stop - sl.start
        ratio = float(torch.rand(1, generator=gen))
        reveal = torch.rand(n, generator=gen) < ratio
        revealed[b, sl] = reveal
        scored[b] = False
        scored[b, sl] = ~reveal
    return revealed, scored


@dataclass
class TokenBatch:
    """One training batch on the device: what the transformer sees and which tokens are scored."""

    tokens_BL: torch.Tensor  # int64 (B, L) targets (and the masked objective's revealed tokens)
    x_BLC: torch.Tensor  # teacher-forcing inputs (B, L - p_1^2, Cvae)
    labels_B: torch.Tensor  # class labels; dropped ones are the null class
    revealed_BL: torch.Tensor | None  # masked objective: tokens shown to the model (None: no masked rows)
    scored_BL: torch.Tensor  # bool (B, L): the tokens the loss is taken on


@dataclass
class CodedSet:
    """A training set coded by the tokenizer (see :func:`encode_dataset`) and its labels (N,)."""

    tokens_NL: torch.Tensor
    x_NLCv: torch.Tensor
    labels_N: torch.Tensor

    def draw(self, batch_size: int, null: int, cond_drop: float, masked_prob: float, slices: list[slice],
             gen: torch.Generator, device: torch.device) -> TokenBatch:
        """A batch drawn with ``gen``: rows uniformly with replacement, then label dropout to the
        ``null`` class (probability ``cond_drop``), then the masked objective's rows
        (``masked_prob``; 0 = none), in that order of random draws."""
        idx = torch.randint(self.tokens_NL.shape[0], (batch_size,), generator=gen)
        tokens_BL, x_BLC = self.tokens_NL[idx], self.x_NLCv[idx]
        drop_B = torch.rand(batch_size, generator=gen) < cond_drop
        labels_B = torch.where(drop_B, torch.full_like(self.labels_N[idx], null), self.labels_N[idx])
        if masked_prob > 0:
            revealed_BL, scored_BL = masked_batch(tokens_BL, slices, masked_prob, gen)
            revealed_BL = revealed_BL.to(device)
        else:
            revealed_BL, scored_BL = None, torch.ones_like(tokens_BL, dtype=torch.bool)
        return TokenBatch(tokens_BL.to(device), x_BLC.to(device), labels_B.to(device), revealed_BL,
                          scored_BL.to(device))
