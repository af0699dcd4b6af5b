"""The next-scale prediction transformer (VAR), with a choice of attention mask (VAR / SRDD).

Sequence layout: all scales' tokens in order, ``L = sum_k p_k^2``. The input of scale 1 is
the start token (class embedding + ``pos_start``); the input of scale k > 1 is
``word_embed(area_down(f_hat_{<k}, p_k))``. Level and position embeddings are added to
every token. Blocks are AdaLN-modulated by the class embedding ``cond_BD`` (index
``num_classes`` is the null class used for classifier-free guidance). Attention uses
``scaled_dot_product_attention`` with an additive bias from :mod:`scalewise.models.masks`.

Module names follow the public VAR release (``blocks.0.attn.mat_qkv``, ``blocks.0.ada_lin.1``,
``head_nm.ada_lin.1``, ``class_emb``, ``pos_start``, ``pos_1LC``, ``lvl_embed``, ...).

With ``masked_objective`` the model also learns to predict hidden tokens of the current
scale from revealed ones: revealed positions add ``tok_embed(token)``, hidden ones the learned
``mask_embed`` (the ordinary prediction is the all-hidden case). Masked resampling uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from scalewise.core.config import ConfigError
from scalewise.models.masks import MASK_KINDS, attn_bias, scale_ids


@dataclass
class TransformerConfig:
    """Architecture of the transformer; ``width`` defaults to 64 * depth, ``heads`` to depth."""

    depth: int = 4
    width: int | None = None
    heads: int | None = None
    mlp_ratio: float = 4.0
    vocab_size: int = 512
    cvae: int = 16
    patch_nums: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 8])
    num_classes: int = 10
    cond_drop: float = 0.1
    mask_kind: str = "causal"
    masked_objective: bool = False
    attn_l2_norm: bool = True
    norm_eps: float = 1e-6
    shared_aln: bool = False  # one AdaLN linear for all blocks plus a learned per-block offset

    def __post_init__(self) -> None:
        self.patch_nums = [int(p) for p in self.patch_nums]
        if self.width is None:
            self.width = 64 * self.depth
        if self.heads is None:
            self.heads = self.depth
        if self.mask_kind not in MASK_KINDS:
            raise ConfigError(f"mask_kind={self.mask_kind!r} is unknown; allowed: {list(MASK_KINDS)}")
        if self.depth < 1 or self.width % self.heads != 0:
            raise ConfigError(f"width={self.width} must be divisible by heads={self.heads} (depth >= 1)")
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1 (1 = unconditional), got {self.num_classes}")
        if not 0.0 <= self.cond_drop < 1.0:
            raise ConfigError(f"cond_drop must lie in [0, 1), got {self.cond_drop}")

    @property
    def num_tokens(self) -> int:
        return sum(p * p for p in self.patch_nums)


# ----------------------------------------------------------------------------- blocks


class SelfAttention(nn.Module):
    """Multi-head attention with optional q/k L2 normalisation and a learnable per-head scale."""

    def __init__(self, width: int, heads: int, l2_norm: bool):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.l2_norm = l2_norm
        self.mat_qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width), persistent=False)
        if l2_norm:
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, heads, 1, 1), 4.0).log())
        self.proj = nn.Linear(width, width)

    def qkv(self, x_BLC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project to q, k, v, each (B, H, L, hd); q and k normalised when ``l2_norm``."""
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        if self.l2_norm:
            scale = self.scale_mul_1H11.clamp(max=math.log(100.0)).exp()
            q = F.normalize(q, dim=-1) * scale
            k = F.normalize(k, dim=-1)
        return q, k, v

    def attend(self, q, k, v, bias: torch.Tensor | None) -> torch.Tensor:
        """(B, H, Lq, hd) x (B, H, Lk, hd) -> (B, Lq, C) after the output projection."""
        scale = 1.0 if self.l2_norm else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)  # (B, H, Lq, hd)
        B, H, Lq, hd = out.shape
        return self.proj(out.transpose(1, 2).reshape(B, Lq, H * hd))


_GELU_C = 2.0 * math.sqrt(2.0 / math.pi)


def gelu_tanh_(x: torch.Tensor) -> torch.Tensor:
    """GELU (tanh approximation) computed in place, without autograd.

    Uses ``0.5 x (1 + tanh(u)) = x * sigmoid(2u)``, u = sqrt(2/pi) (x + 0.044715 x^3): the same
    function as ``F.gelu(x, approximate="tanh")`` (within 1e-6) at about twice its CPU speed.
    """
    u = x * x
    u.mul_(0.044715 * _GELU_C).add_(_GELU_C).mul_(x)
    return x.mul_(u.sigmoid_())


class FFN(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(self.act(h) if torch.is_grad_enabled() else gelu_tanh_(h))


class AdaLNSelfAttn(nn.Module):
    """Pre-norm block; LayerNorm scale/shift and residual gates come from the class embedding.

    Per-block AdaLN (``ada_lin``, VAR's default) or, with ``shared_aln``, a learned offset
    ``ada_gss`` (1, 1, 6, C) added to the model's shared modulation.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        C = cfg.width
        self.attn = SelfAttention(C, cfg.heads, cfg.attn_l2_norm)
        self.ffn = FFN(C, round(C * cfg.mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(C, eps=cfg.norm_eps, elementwise_affine=False)
        if cfg.shared_aln:
            self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, C))
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))

    def modulation(self, cond_BD: torch.Tensor, shared_B16C: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) -> (B, 1, 6, C): gamma1, gamma2, scale1, scale2, shift1, shift2.

        ``shared_B16C``: the shared modulation (needed, and only used, with ``shared_aln``).
        """
        if hasattr(self, "ada_gss"):
            if shared_B16C is None:
                raise ValueError("a shared-AdaLN block needs the model's shared modulation")
            return self.ada_gss + shared_B16C
        return self.ada_lin(cond_BD).view(cond_BD.shape[0], 1, 6, -1)

    def forward(self, x_BLC: torch.Tensor, mod_B16C: torch.Tensor, bias: torch.Tensor | None,
                kv: "KVSlot | None" = None) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mod_B16C.unbind(2)  # each (B, 1, C)
        h = torch.addcmul(shift1, self.ln_wo_grad(x_BLC), scale1 + 1)
        q, k, v = self.attn.qkv(h)
        if kv is not None:
            k, v = kv.extend(k, v)
        x_BLC = torch.addcmul(x_BLC, self.attn.attend(q, k, v, bias), gamma1)
        h = torch.addcmul(shift2, self.ln_wo_grad(x_BLC), scale2 + 1)
        return torch.addcmul(x_BLC, self.ffn(h), gamma2)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, C: int, eps: float):
        super().__init__()
        self.ln_wo_grad = nn.LayerNorm(C, eps=eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 2 * C))

    def modulation(self, cond_BD: torch.Tensor) -> torch.Tensor:
        return self.ada_lin(cond_BD).view(cond_BD.shape[0], 1, 2, -1)

    def forward(self, x_BLC: torch.Tensor, mod_B12C: torch.Tensor) -> torch.Tensor:
        scale, shift = mod_B12C.unbind(2)
        return torch.addcmul(shift, self.ln_wo_grad(x_BLC), scale + 1)


class KVSlot:
    """Preallocated key/value storage of one block for cached sampling.

    ``extend(k, v)`` writes the current scale's keys/values at ``[write_at, write_at + n)``
    and returns the window ``[read_from, write_at + n)`` to attend to; the sampler sets
    ``read_from`` / ``write_at`` per scale from the mask kind (see :func:`masks.context_scales`).
    """

    def __init__(self, B: int, H: int, capacity: int, hd: int, dtype: torch.dtype, device: torch.device):
        self.k = torch.empty(B, H, capacity, hd, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self.read_from = 0
        self.write_at = 0
        self.frozen = False  # refinement passes read the cache but do not overwrite it

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = k.shape[2]
        if self.frozen:
            keys = torch.cat((self.k[:, :, self.read_from:self.write_at], k), dim=2)
            vals = torch.cat((self.v[:, :, self.read_from:self.write_at], v), dim=2)
            return keys, vals
        self.k[:, :, self.write_at:self.write_at + n] = k
        self.v[:, :, self.write_at:self.write_at + n] = v
        return self.k[:, :, self.read_from:self.write_at + n], self.v[:, :, self.read_from:self.write_at + n]

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


# ----------------------------------------------------------------------------- model


class ScaleTransformer(nn.Module):
    """Next-scale prediction transformer: (labels, teacher-forcing inputs) -> logits (B, L, V)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        C, V, K = cfg.width, cfg.vocab_size, len(cfg.patch_nums)
        self.first_l = cfg.patch_nums[0] ** 2
        self.num_classes = cfg.num_classes
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, cfg.num_tokens, C))
        self.lvl_embed = nn.Embedding(K, C)
        self.word_embed = nn.Linear(cfg.cvae, C)
        if cfg.shared_aln:
            self.shared_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))
        self.blocks = nn.ModuleList([AdaLNSelfAttn(cfg) for _ in range(cfg.depth)])
        self.head_nm = AdaLNBeforeHead(C, cfg.norm_eps)
        self.head = nn.Linear(C, V)
        if cfg.masked_objective:
            self.mask_embed = nn.Parameter(torch.zeros(C))
            self.tok_embed = nn.Embedding(V, C)
        for name, buf in self._derived_buffers().items():
            self.register_buffer(name, buf, persistent=False)
        self._init_weights()

    def _derived_buffers(self) -> dict[str, torch.Tensor]:
        """Non-persistent buffers that follow from the config (not in the state dict)."""
        pn = self.cfg.patch_nums
        return {"lvl_1L": scale_ids(pn), "attn_bias_LL": attn_bias(pn, self.cfg.mask_kind)}

    def rebuild_derived_buffers_(self, device: torch.device | str = "cpu") -> "ScaleTransformer":
        """Recompute the config-derived buffers on ``device``.

        For a model built on the ``meta`` device and then loaded with ``assign=True``.
        """
        with torch.device("cpu"):
            for name, buf in self._derived_buffers().items():
                setattr(self, name, buf.to(device))
        for blk in self.blocks:
            blk.attn.zero_k_bias = torch.zeros(self.cfg.width, device=device)
        return self

    def _init_weights(self) -> None:
        std = 0.02
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        for p in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, std=std)
        # adaLN-zero: every block starts as the identity; the head starts unmodulated.
        for lin in [blk.ada_lin[1] for blk in self.blocks if hasattr(blk, "ada_lin")] + (
                [self.shared_ada_lin[1]] if self.cfg.shared_aln else []):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        nn.init.zeros_(self.head_nm.ada_lin[1].weight)
        nn.init.zeros_(self.head_nm.ada_lin[1].bias)
        self.head.weight.data.mul_(0.1)

    # --- pieces shared by training and sampling -----------------------------------------

    def scale_slices(self) -> list[slice]:
        """Token range of each scale in the full sequence."""
        out, start = [], 0
        for p in self.cfg.patch_nums:
            out.append(slice(start, start + p * p))
            start += p * p
        return out

    def cond(self, labels_B: torch.Tensor) -> torch.Tensor:
        """Class embeddings (B, C); label ``num_classes`` is the null class."""
        if labels_B.numel() and (int(labels_B.min()) < 0 or int(labels_B.max()) > self.num_classes):
            raise ValueError(
                f"class labels must lie in [0, {self.num_classes - 1}] (or {self.num_classes} = null class), "
                f"got {labels_B.tolist()}"
            )
        return self.class_emb(labels_B)

    def block_modulations(self, cond_BD: torch.Tensor) -> list[torch.Tensor]:
        """AdaLN modulation (B, 1, 6, C) of every block; computed once per sample when sampling."""
        shared = None
        if self.cfg.shared_aln:
            shared = self.shared_ada_lin(cond_BD).view(cond_BD.shape[0], 1, 6, -1)
        return [blk.modulation(cond_BD, shared) for blk in self.blocks]

    def embed_inputs(self, cond_BD: torch.Tensor, x_BlCv: torch.Tensor | None, sl: slice) -> torch.Tensor:
        """Input embeddings of token range ``sl`` (B, n, C): start token for scale 1, else word_embed."""
        if sl.start == 0:
            B = cond_BD.shape[0]
            h = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, -1, -1)
            if x_BlCv is not None and x_BlCv.shape[1] > 0:
                h = torch.cat((h, self.word_embed(x_BlCv)), dim=1)
        else:
            h = self.word_embed(x_BlCv)
        end = sl.start + h.shape[1]
        return h + self.lvl_embed(self.lvl_1L[sl.start:end]) + self.pos_1LC[:, sl.start:end]

    def reveal_embed(self, tokens_Bn: torch.Tensor, revealed_Bn: torch.Tensor) -> torch.Tensor:
        """Masked objective: ``tok_embed(token)`` where revealed, ``mask_embed`` elsewhere (B, n, C)."""
        return torch.where(revealed_Bn.unsqueeze(-1), self.tok_embed(tokens_Bn), self.mask_embed)

    # --- training / teacher forcing -------------------------------------------------------

    def forward(
        self,
        labels_B: torch.Tensor,
        x_BLCv: torch.Tensor,
        tokens_BL: torch.Tensor | None = None,
        revealed_BL: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits (B, L, V).

        Args:
            labels_B: class indices (B,), ``num_classes`` = null class (already dropped).
            x_BLCv: :meth:`Tokenizer.teacher_forcing_input`, (B, L - p_1^2, Cvae).
            tokens_BL, revealed_BL: masked objective only: ground-truth tokens and which of
                them are revealed (all False = ordinary prediction).
        """
        cond_BD = self.cond(labels_B)
        L = self.first_l + x_BLCv.shape[1]
        h = self.embed_inputs(cond_BD, x_BLCv, slice(0, L))
        if self.cfg.masked_objective:
            if revealed_BL is None:
                revealed_BL = torch.zeros(h.shape[:2], dtype=torch.bool, device=h.device)
                tokens_BL = torch.zeros(h.shape[:2], dtype=torch.long, device=h.device)
            h = h + self.reveal_embed(tokens_BL, revealed_BL)
        bias = self.attn_bias_LL[:L, :L].to(h.dtype)
        for blk, mod in zip(self.blocks, self.block_modulations(cond_BD)):
            h = blk(h, mod, bias)
        return self.head(self.head_nm(h, self.head_nm.modulation(cond_BD))).float()
