"""Test support: the public VAR release's checkpoint layout, without downloading it.

The FoundationVision/VAR release ships ``vae_ch160v4096z32.pth`` (a multi-scale VQVAE) and
``var_d16.pth`` (the next-scale transformer). This module provides

* ``official_vae_state`` / ``official_var_state``: random state dicts whose keys, shapes,
  dtypes and persistent buffers follow that release (in its ``state_dict()`` order), with
  values scaled so that every layer matters (non-zero AdaLN, varied code indices, ...);
* ``ref_vae_encode`` / ``ref_vae_decode`` / ``ref_teacher_forcing_input`` / ``ref_var_logits``:
  an independent functional re-statement of the release's forward passes that reads those
  state dicts directly, inferring the architecture from the keys and shapes.

``RELEASE_VAE_KWARGS`` / ``RELEASE_VAR_KWARGS`` give the full-size release configuration
(large: use for key/shape checks only). Everything runs on CPU in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor
State = dict[str, Tensor]

RELEASE_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
RELEASE_VAE_KWARGS = dict(vocab_size=4096, cvae=32, ch=160, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                          in_channels=3, share_quant_resi=4, num_scales=len(RELEASE_PATCH_NUMS), using_sa=True)
RELEASE_VAR_KWARGS = dict(depth=16, vocab_size=4096, cvae=32, num_classes=1000,
                          patch_nums=RELEASE_PATCH_NUMS, shared_aln=False)

GN_GROUPS, GN_EPS, LN_EPS, PHI_RATIO = 32, 1e-6, 1e-6, 0.5


# ----------------------------------------------------------------------------- generation
class _Filler(dict):
    """An ordered state dict filled with seeded, well-scaled random tensors."""

    def __init__(self, seed: int):
        super().__init__()
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape: int) -> Tensor:
        return torch.randn(shape, generator=self.gen)

    def dense(self, name: str, *shape: int, bias: bool = True) -> None:
        """Linear (out, in) or conv (out, in, k, k) weight ~ N(0, 1/fan_in), bias ~ N(0, 0.05^2)."""
        self[f"{name}.weight"] = self.randn(*shape) / math.sqrt(math.prod(shape[1:]))
        if bias:
            self[f"{name}.bias"] = 0.05 * self.randn(shape[0])

    def norm(self, name: str, c: int) -> None:
        self[f"{name}.weight"] = 1.0 + 0.1 * self.randn(c)
        self[f"{name}.bias"] = 0.1 * self.randn(c)

    def resnet(self, name: str, c_in: int, c_out: int) -> None:
        self.norm(f"{name}.norm1", c_in)
        self.dense(f"{name}.conv1", c_out, c_in, 3, 3)
        self.norm(f"{name}.norm2", c_out)
        self.dense(f"{name}.conv2", c_out, c_out, 3, 3)
        if c_in != c_out:
            self.dense(f"{name}.nin_shortcut", c_out, c_in, 1, 1)

    def attn(self, name: str, c: int) -> None:
        self.norm(f"{name}.norm", c)
        self.dense(f"{name}.qkv", 3 * c, c, 1, 1)
        self.dense(f"{name}.proj_out", c, c, 1, 1)

    def level(self, name: str, c_in: int, c_out: int, n_blocks: int, with_attn: bool) -> None:
        for j in range(n_blocks):
            self.resnet(f"{name}.block.{j}", c_in if j == 0 else c_out, c_out)
        for j in range(n_blocks if with_attn else 0):
            self.attn(f"{name}.attn.{j}", c_out)

    def mid(self, name: str, c: int) -> None:
        self.resnet(f"{name}.block_1", c, c)
        self.attn(f"{name}.attn_1", c)
        self.resnet(f"{name}.block_2", c, c)


def official_vae_state(*, vocab_size: int = 64, cvae: int = 8, ch: int = 32, ch_mult: Sequence[int] = (1, 2, 2),
                       num_res_blocks: int = 1, in_channels: int = 3, share_quant_resi: int = 4,
                       num_scales: int = 4, using_sa: bool = True, seed: int = 0) -> State:
    """Random VQVAE state dict in the release layout; latent side = image side / 2**(len(ch_mult)-1).

    ``share_quant_resi``: 0 = one phi per scale, 1 = a single shared phi, n >= 2 = n partially shared.
    ``using_sa`` only concerns the per-level attention; the middle attention is always present.
    """
    sd, top = _Filler(seed), len(ch_mult) - 1
    widths = [ch * m for m in ch_mult]
    sd.dense("encoder.conv_in", ch, in_channels, 3, 3)
    for i, c_out in enumerate(widths):
        c_in = ch if i == 0 else widths[i - 1]
        sd.level(f"encoder.down.{i}", c_in, c_out, num_res_blocks, using_sa and i == top)
        if i != top:
            sd.dense(f"encoder.down.{i}.downsample.conv", c_out, c_out, 3, 3)
    sd.mid("encoder.mid", widths[-1])
    sd.norm("encoder.norm_out", widths[-1])
    sd.dense("encoder.conv_out", cvae, widths[-1], 3, 3)

    sd.dense("decoder.conv_in", widths[-1], cvae, 3, 3)
    sd.mid("decoder.mid", widths[-1])
    for i, c_out in enumerate(widths):  # stored by level index, run from the top; level i is fed by level i+1
        c_in = widths[min(i + 1, top)]
        sd.level(f"decoder.up.{i}", c_in, c_out, num_res_blocks + 1, using_sa and i == top)
        if i != 0:
            sd.dense(f"decoder.up.{i}.upsample.conv", c_out, c_out, 3, 3)
    sd.norm("decoder.norm_out", widths[0])
    sd.dense("decoder.conv_out", in_channels, widths[0], 3, 3)

    sd["quantize.ema_vocab_hit_SV"] = 4.0 * torch.rand(num_scales, vocab_size, generator=sd.gen)
    if share_quant_resi == 1:
        phi_names = ["quantize.quant_resi.qresi"]
    else:
        n_phi, prefix = (num_scales, "") if share_quant_resi == 0 else (share_quant_resi, "qresi_ls.")
        phi_names = [f"quantize.quant_resi.{prefix}{k}" for k in range(n_phi)]
    for name in phi_names:
        sd.dense(name, cvae, cvae, 3, 3)
    sd["quantize.embedding.weight"] = 0.5 * sd.randn(vocab_size, cvae)
    sd.dense("quant_conv", cvae, cvae, 3, 3)
    sd.dense("post_quant_conv", cvae, cvae, 3, 3)
    return dict(sd)


def official_var_state(*, depth: int = 2, vocab_size: int = 64, cvae: int = 8, num_classes: int = 5,
                       patch_nums: Sequence[int] = (1, 2, 4, 8), width: int | None = None,
                       heads: int | None = None, mlp_ratio: float = 4.0, shared_aln: bool = False,
                       seed: int = 0) -> State:
    """Random VAR state dict in the release layout (``attn_l2_norm`` on, as in the release).

    Defaults follow the release's depth rule: ``width = 64 * depth``, ``heads = depth``.
    """
    C = width if width is not None else 64 * depth
    H = heads if heads is not None else depth
    assert C % H == 0, (C, H)
    sd, scale_L = _Filler(seed), _scale_ids(patch_nums)
    L, hidden = scale_L.numel(), round(mlp_ratio * C)
    sd["pos_start"] = 0.5 * sd.randn(1, patch_nums[0] ** 2, C)
    sd["pos_1LC"] = 0.5 * sd.randn(1, L, C)
    sd["lvl_1L"] = scale_L.view(1, L).clone()
    sd["attn_bias_for_masking"] = _block_causal_bias(scale_L).view(1, 1, L, L)
    sd.dense("word_embed", C, cvae)
    sd["class_emb.weight"] = 0.5 * sd.randn(num_classes + 1, C)
    sd["lvl_embed.weight"] = 0.5 * sd.randn(len(patch_nums), C)
    if shared_aln:
        sd.dense("shared_ada_lin.1", 6 * C, C)
    for i in range(depth):
        if shared_aln:
            sd[f"blocks.{i}.ada_gss"] = 0.1 * sd.randn(1, 1, 6, C)
        attn = f"blocks.{i}.attn"
        sd[f"{attn}.scale_mul_1H11"] = math.log(4.0) + 0.1 * sd.randn(1, H, 1, 1)
        sd[f"{attn}.q_bias"] = 0.05 * sd.randn(C)
        sd[f"{attn}.v_bias"] = 0.05 * sd.randn(C)
        sd[f"{attn}.zero_k_bias"] = torch.zeros(C)
        sd.dense(f"{attn}.mat_qkv", 3 * C, C, bias=False)
        sd.dense(f"{attn}.proj", C, C)
        sd.dense(f"blocks.{i}.ffn.fc1", hidden, C)
        sd.dense(f"blocks.{i}.ffn.fc2", C, hidden)
        if not shared_aln:
            sd.dense(f"blocks.{i}.ada_lin.1", 6 * C, C)
    sd.dense("head_nm.ada_lin.1", 2 * C, C)
    sd.dense("head", vocab_size, C)
    return dict(sd)


def _scale_ids(patch_nums: Sequence[int]) -> Tensor:
    """(L,) int64: the scale index of every token, scales in order."""
    sizes = torch.tensor([p * p for p in patch_nums])
    return torch.repeat_interleave(torch.arange(len(patch_nums)), sizes)


def _block_causal_bias(scale_L: Tensor) -> Tensor:
    """(L, L) float32 additive bias: query row q may see key column k iff scale[k] <= scale[q]."""
    hidden_LL = scale_L[None, :] > scale_L[:, None]
    return torch.zeros(hidden_LL.shape).masked_fill(hidden_LL, float("-inf"))


# ----------------------------------------------------------------------------- VQVAE reference
def _count(state: State, prefix: str) -> int:
    """Number of consecutive children ``{prefix}.0``, ``{prefix}.1``, ... present in the state."""
    n = 0
    while any(key.startswith(f"{prefix}.{n}.") for key in state):
        n += 1
    return n


def _conv(state: State, name: str, x_BCHW: Tensor, stride: int = 1, padding: int | None = None) -> Tensor:
    weight = state[f"{name}.weight"]
    pad = weight.shape[-1] // 2 if padding is None else padding
    return F.conv2d(x_BCHW, weight, state[f"{name}.bias"], stride=stride, padding=pad)


def _group_norm(state: State, name: str, x_BCHW: Tensor) -> Tensor:
    return F.group_norm(x_BCHW, GN_GROUPS, state[f"{name}.weight"], state[f"{name}.bias"], eps=GN_EPS)


def _gn_silu(state: State, name: str, x_BCHW: Tensor) -> Tensor:
    return F.silu(_group_norm(state, name, x_BCHW))


def _resnet(state: State, name: str, x_BCHW: Tensor) -> Tensor:
    h_BCHW = _conv(state, f"{name}.conv1", _gn_silu(state, f"{name}.norm1", x_BCHW))
    h_BCHW = _conv(state, f"{name}.conv2", _gn_silu(state, f"{name}.norm2", h_BCHW))
    has_skip_conv = f"{name}.nin_shortcut.weight" in state
    return (_conv(state, f"{name}.nin_shortcut", x_BCHW) if has_skip_conv else x_BCHW) + h_BCHW


def _spatial_attn(state: State, name: str, x_BCHW: Tensor) -> Tensor:
    """Single-head softmax attention over the H*W positions, residual."""
    B, C, H, W = x_BCHW.shape
    normed_BCHW = _group_norm(state, f"{name}.norm", x_BCHW)
    q_BCN, k_BCN, v_BCN = _conv(state, f"{name}.qkv", normed_BCHW).reshape(B, 3, C, H * W).unbind(1)
    weights_BNN = torch.softmax(q_BCN.transpose(1, 2) @ k_BCN * C ** -0.5, dim=-1)  # (query, key)
    out_BCN = v_BCN @ weights_BNN.transpose(1, 2)
    return x_BCHW + _conv(state, f"{name}.proj_out", out_BCN.reshape(B, C, H, W))


def _level(state: State, name: str, h_BCHW: Tensor) -> Tensor:
    """The resnet blocks of one encoder/decoder level, each followed by its attention if any."""
    for j in range(_count(state, f"{name}.block")):
        h_BCHW = _resnet(state, f"{name}.block.{j}", h_BCHW)
        if f"{name}.attn.{j}.qkv.weight" in state:
            h_BCHW = _spatial_attn(state, f"{name}.attn.{j}", h_BCHW)
    return h_BCHW


def _mid(state: State, name: str, h_BCHW: Tensor) -> Tensor:
    h_BCHW = _resnet(state, f"{name}.block_1", h_BCHW)
    if f"{name}.attn_1.qkv.weight" in state:
        h_BCHW = _spatial_attn(state, f"{name}.attn_1", h_BCHW)
    return _resnet(state, f"{name}.block_2", h_BCHW)


def _encode_features(state: State, img_BCHW: Tensor) -> Tensor:
    """Image (B, C, H, W) in [-1, 1] -> quant_conv(encoder(img)), (B, Cvae, h, w)."""
    h_BCHW = _conv(state, "encoder.conv_in", img_BCHW)
    for i in range(_count(state, "encoder.down")):
        h_BCHW = _level(state, f"encoder.down.{i}", h_BCHW)
        if f"encoder.down.{i}.downsample.conv.weight" in state:  # pad right/bottom, 3x3 stride 2
            h_BCHW = _conv(state, f"encoder.down.{i}.downsample.conv", F.pad(h_BCHW, (0, 1, 0, 1)), 2, 0)
    h_BCHW = _mid(state, "encoder.mid", h_BCHW)
    h_BCHW = _conv(state, "encoder.conv_out", _gn_silu(state, "encoder.norm_out", h_BCHW))
    return _conv(state, "quant_conv", h_BCHW)


def _decode_features(state: State, f_hat_BCHW: Tensor) -> Tensor:
    """f_hat (B, Cvae, h, w) -> decoder(post_quant_conv(f_hat)) clamped to [-1, 1]."""
    h_BCHW = _conv(state, "decoder.conv_in", _conv(state, "post_quant_conv", f_hat_BCHW))
    h_BCHW = _mid(state, "decoder.mid", h_BCHW)
    for i in reversed(range(_count(state, "decoder.up"))):
        h_BCHW = _level(state, f"decoder.up.{i}", h_BCHW)
        if f"decoder.up.{i}.upsample.conv.weight" in state:  # nearest x2, then 3x3
            h_BCHW = F.interpolate(h_BCHW, scale_factor=2.0, mode="nearest")
            h_BCHW = _conv(state, f"decoder.up.{i}.upsample.conv", h_BCHW)
    h_BCHW = _conv(state, "decoder.conv_out", _gn_silu(state, "decoder.norm_out", h_BCHW))
    return h_BCHW.clamp(-1.0, 1.0)


def _phi_names(state: State) -> list[str]:
    if "quantize.quant_resi.qresi.weight" in state:  # one phi shared by every scale
        return ["quantize.quant_resi.qresi"]
    shared = _count(state, "quantize.quant_resi.qresi_ls")
    if shared:
        return [f"quantize.quant_resi.qresi_ls.{k}" for k in range(shared)]
    return [f"quantize.quant_resi.{k}" for k in range(_count(state, "quantize.quant_resi"))]


def _phi_index(at: float, n: int) -> int:
    """Index of the phi whose tick is nearest to ``at`` in [0, 1] (n ticks, evenly spaced).

    numpy on purpose: with 10 scales, si = 2 and si = 7 fall exactly half-way between two
    ticks, and the release's choice (phi 1 and phi 3) is decided by np.linspace's rounding.
    """
    if n == 1:
        return 0
    margin = 1 / 3 / n if n == 4 else 1 / 2 / n
    return int(np.argmin(np.abs(np.linspace(margin, 1 - margin, n) - at)))


def _scale_residual(state: State, idx_Bpp: Tensor, si: int, patch_nums: Sequence[int]) -> Tensor:
    """phi_si(bicubic-up(codebook[idx])): scale si's contribution to f_hat, (B, Cvae, h, w)."""
    K, side = len(patch_nums), patch_nums[-1]
    h_BCpp = state["quantize.embedding.weight"][idx_Bpp].permute(0, 3, 1, 2)
    if si != K - 1:
        h_BCpp = F.interpolate(h_BCpp, size=(side, side), mode="bicubic")
    names = _phi_names(state)
    name = names[_phi_index(si / (K - 1), len(names))]
    return (1 - PHI_RATIO) * h_BCpp + PHI_RATIO * _conv(state, name, h_BCpp)


def ref_vae_encode(state: State, img_BCHW: Tensor, patch_nums: Sequence[int]) -> list[Tensor]:
    """Image (B, C, H, W) in [-1, 1] -> residual code maps, one int64 (B, p, p) per scale."""
    f_BCHW = _encode_features(state, img_BCHW.float())
    B, C, h, w = f_BCHW.shape
    assert h == w == patch_nums[-1], f"latent {h}x{w} != last scale {patch_nums[-1]}"
    codebook_VC = state["quantize.embedding.weight"]
    f_rest_BCHW, idx_maps = f_BCHW.clone(), []
    for si, p in enumerate(patch_nums):
        last = si == len(patch_nums) - 1
        z_BCpp = f_rest_BCHW if last else F.interpolate(f_rest_BCHW, size=(p, p), mode="area")
        z_NC = z_BCpp.permute(0, 2, 3, 1).reshape(-1, C)
        dist_NV = z_NC.square().sum(1, keepdim=True) - 2 * z_NC @ codebook_VC.T + codebook_VC.square().sum(1)
        idx_Bpp = dist_NV.argmin(dim=1).view(B, p, p)
        idx_maps.append(idx_Bpp)
        f_rest_BCHW = f_rest_BCHW - _scale_residual(state, idx_Bpp, si, patch_nums)
    return idx_maps


def ref_vae_decode(state: State, idx_maps: Sequence[Tensor], patch_nums: Sequence[int]) -> Tensor:
    """Code maps ((B, p, p) or (B, p*p) per scale) -> image (B, C, H, W) clamped to [-1, 1]."""
    f_hat_BCHW = sum(_scale_residual(state, idx.reshape(idx.shape[0], p, p), si, patch_nums)
                     for si, (idx, p) in enumerate(zip(idx_maps, patch_nums, strict=True)))
    return _decode_features(state, f_hat_BCHW)


def ref_teacher_forcing_input(state: State, idx_maps: Sequence[Tensor], patch_nums: Sequence[int]) -> Tensor:
    """Inputs of scales 1..K-1: area-down(f_hat of scales < k, p_k), (B, L - p_0**2, Cvae)."""
    f_hat_BCHW, parts = 0.0, []
    for si in range(len(patch_nums) - 1):
        idx_Bpp = idx_maps[si].reshape(idx_maps[si].shape[0], patch_nums[si], patch_nums[si])
        f_hat_BCHW = f_hat_BCHW + _scale_residual(state, idx_Bpp, si, patch_nums)
        p = patch_nums[si + 1]
        parts.append(F.interpolate(f_hat_BCHW, size=(p, p), mode="area").flatten(2).transpose(1, 2))
    return torch.cat(parts, dim=1)


# ----------------------------------------------------------------------------- VAR reference
def _lin(state: State, name: str, x: Tensor) -> Tensor:
    return F.linear(x, state[f"{name}.weight"], state.get(f"{name}.bias"))


def _modulate(x_BLC: Tensor, scale_B1C: Tensor, shift_B1C: Tensor) -> Tensor:
    return F.layer_norm(x_BLC, x_BLC.shape[-1:], eps=LN_EPS) * (1 + scale_B1C) + shift_B1C


def _self_attn(state: State, name: str, x_BLC: Tensor, bias_LL: Tensor, heads: int | None) -> Tensor:
    """Multi-head attention with explicit softmax; q/k L2-normalised when ``scale_mul_1H11`` exists."""
    B, L, C = x_BLC.shape
    scale_mul_1H11 = state.get(f"{name}.scale_mul_1H11")
    H = heads if heads is not None else scale_mul_1H11.shape[1]
    d = C // H
    k_bias = state.get(f"{name}.zero_k_bias", torch.zeros(C))
    qkv_bias = torch.cat([state[f"{name}.q_bias"], k_bias, state[f"{name}.v_bias"]])
    qkv_BL3C = F.linear(x_BLC, state[f"{name}.mat_qkv.weight"], qkv_bias)
    q_BHLd, k_BHLd, v_BHLd = qkv_BL3C.view(B, L, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)
    if scale_mul_1H11 is not None:
        q_BHLd = F.normalize(q_BHLd, dim=-1) * scale_mul_1H11.clamp(max=math.log(100.0)).exp()
        k_BHLd = F.normalize(k_BHLd, dim=-1)
        temperature = 1.0
    else:
        temperature = 0.25 / math.sqrt(d)
    scores_BHLL = (q_BHLd @ k_BHLd.transpose(-1, -2)) * temperature + bias_LL
    out_BHLd = torch.softmax(scores_BHLL, dim=-1) @ v_BHLd
    return _lin(state, f"{name}.proj", out_BHLd.transpose(1, 2).reshape(B, L, C))


def ref_var_logits(var_state: State, labels_B: Tensor, x_BLCv: Tensor, patch_nums: Sequence[int],
                   *, heads: int | None = None) -> Tensor:
    """Teacher-forced logits (B, L, V) of every scale, block-causal mask, no dropout.

    ``x_BLCv``: (B, L - p_0**2, Cvae) teacher-forcing input; ``labels_B``: int64 class ids
    (``num_classes`` is the null class). ``heads`` is read from ``scale_mul_1H11`` unless given.
    """
    sd = var_state
    scale_L = _scale_ids(patch_nums)
    bias_LL = _block_causal_bias(scale_L)
    cond_BC = sd["class_emb.weight"][labels_B]
    B, C = cond_BC.shape
    first = patch_nums[0] ** 2
    start_BlC = cond_BC[:, None, :].expand(B, first, C) + sd["pos_start"]
    x_BLC = torch.cat([start_BlC, _lin(sd, "word_embed", x_BLCv.float())], dim=1)
    x_BLC = x_BLC + sd["lvl_embed.weight"][scale_L] + sd["pos_1LC"]

    act_BC = F.silu(cond_BC)
    shared_B6C = None
    if "shared_ada_lin.1.weight" in sd:  # one AdaLN projection for all blocks plus a per-block offset
        shared_B6C = _lin(sd, "shared_ada_lin.1", act_BC).view(B, 6, C)
    for i in range(_count(sd, "blocks")):
        name = f"blocks.{i}"
        if shared_B6C is None:
            mod_B6C = _lin(sd, f"{name}.ada_lin.1", act_BC).view(B, 6, C)
        else:
            mod_B6C = shared_B6C + sd[f"{name}.ada_gss"].view(1, 6, C)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mod_B6C[:, :, None, :].unbind(1)  # each (B, 1, C)
        attn_BLC = _self_attn(sd, f"{name}.attn", _modulate(x_BLC, scale1, shift1), bias_LL, heads)
        x_BLC = x_BLC + attn_BLC * gamma1
        hidden_BLF = F.gelu(_lin(sd, f"{name}.ffn.fc1", _modulate(x_BLC, scale2, shift2)), approximate="tanh")
        x_BLC = x_BLC + _lin(sd, f"{name}.ffn.fc2", hidden_BLF) * gamma2

    scale_B1C, shift_B1C = _lin(sd, "head_nm.ada_lin.1", act_BC).view(B, 2, 1, C).unbind(1)
    return _lin(sd, "head", _modulate(x_BLC, scale_B1C, shift_B1C))
