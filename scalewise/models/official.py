"""The official VAR release checkpoints (``vae_ch160v4096z32.pth``, ``var_d16.pth`` .. ``var_d30.pth``).

Our :class:`~scalewise.models.tokenizer.Tokenizer` and :class:`~scalewise.models.transformer.ScaleTransformer`
use the release's module names, so a release state dict maps onto them key for key. What
differs is bookkeeping:

- buffers the release stores and we derive (``lvl_1L``, ``attn_bias_for_masking``, every
  block's ``attn.zero_k_bias``) are checked against what our config derives, then kept aside;
- the VAE's code-usage statistics (``quantize.ema_vocab_hit_SV``) are kept aside, and our
  ``quantize.usage_ema`` starts at zero;
- a single shared phi conv (``quantize.quant_resi.qresi``) is our ``qresi_ls.0``, and one phi
  per scale (``quantize.quant_resi.<i>``) is our ``qresi_ls.<i>``; saving restores the layout.

The architecture is read from the tensors themselves: depth from the number of blocks, width
and classes from ``class_emb``, heads from ``scale_mul_1H11``, the scale schedule from
``lvl_1L``, the VAE's channels, levels and blocks from the encoder's convolutions.
:func:`official_state_dicts` writes the release layout back; loading then saving is bit-exact.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scalewise.core.config import ConfigError
from scalewise.core.io import load_torch, save_torch
from scalewise.models.masks import attn_bias, scale_ids
from scalewise.models.state import load_state_checked
from scalewise.models.tokenizer import Tokenizer, TokenizerConfig
from scalewise.models.transformer import ScaleTransformer, TransformerConfig

# Scale schedules of the releases, by total token count (used when ``lvl_1L`` is absent).
RELEASE_PATCH_NUMS = {
    680: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),  # 256 px
    2240: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32),  # 512 px
}
VAE_STATS_KEY = "quantize.ema_vocab_hit_SV"
QUANT_RESI_SINGLE = "quantize.quant_resi.qresi."  # the release's one shared phi (share_quant_resi=1)
QUANT_RESI_LIST = "quantize.quant_resi.qresi_ls."  # ours, and the release's partially shared phis
NON_SHARED = re.compile(r"^quantize\.quant_resi\.(\d+)\.")  # the release's one phi per scale (share_quant_resi=0)


class OfficialCheckpointError(ValueError):
    """A file is not an official VAR / VQVAE checkpoint, or the two do not belong together."""


@dataclass
class OfficialModels:
    """What :func:`load_official_var` returns: our models plus the release buffers kept aside."""

    tokenizer: Tokenizer
    transformer: ScaleTransformer
    vae_extras: dict[str, torch.Tensor] = field(default_factory=dict)
    var_extras: dict[str, torch.Tensor] = field(default_factory=dict)
    vae_keys: list[str] = field(default_factory=list)  # release key order, for a faithful save
    var_keys: list[str] = field(default_factory=list)
    phi_layout: str = "partially_shared"  # release layout of the phi convs: shared, partially_shared, non_shared

    @property
    def image_size(self) -> int:
        """Side of the images in pixels: last patch number x the VAE's downsampling."""
        return self.tokenizer.cfg.patch_nums[-1] * self.tokenizer.cfg.downsample


# ----------------------------------------------------------------------------- reading


def read_state_dict(path: str | os.PathLike, what: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (loaded with ``weights_only=True``); ``what`` names it in errors."""
    obj = load_torch(path, map_location=device)
    if isinstance(obj, dict) and "state_dict" in obj and "config" in obj:
        raise OfficialCheckpointError(
            f"{path}: is a scalewise {obj.get('kind', 'model')} checkpoint, not an official {what} file; "
            "pass it with --tokenizer / --model instead")
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise OfficialCheckpointError(f"{path}: not an official {what} state dict (a flat dict of tensors)")
    return obj


def _count(state: dict, pattern: str) -> int:
    """How many consecutive indices i make ``pattern.format(i)`` a key of ``state``."""
    n = 0
    while pattern.format(n) in state:
        n += 1
    return n


def _require(state: dict, keys: list[str], path, what: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise OfficialCheckpointError(f"{path}: not an official {what} checkpoint: missing {missing}")


def phi_layout(state: dict) -> str:
    """How a release VQVAE stores its phi convs: ``shared``, ``partially_shared`` or ``non_shared``."""
    if QUANT_RESI_SINGLE + "weight" in state:
        return "shared"
    return "non_shared" if "quantize.quant_resi.0.weight" in state else "partially_shared"


def vae_config_from_state(state: dict, patch_nums: list[int], path="<vae>") -> TokenizerConfig:
    """The :class:`TokenizerConfig` a release VQVAE state dict describes, for ``patch_nums``."""
    _require(state, ["encoder.conv_in.weight", "encoder.down.0.block.0.conv1.weight",
                     "quantize.embedding.weight", "decoder.conv_out.weight"], path, "VQVAE")
    ch, in_channels = state["encoder.conv_in.weight"].shape[:2]
    levels = _count(state, "encoder.down.{}.block.0.conv1.weight")
    ch_mult = [int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) // int(ch) for i in range(levels)]
    vocab, cvae = state["quantize.embedding.weight"].shape
    num_phi = {"shared": 1, "non_shared": _count(state, "quantize.quant_resi.{}.weight"),
               "partially_shared": _count(state, QUANT_RESI_LIST + "{}.weight")}[phi_layout(state)]
    if num_phi == 0:
        raise OfficialCheckpointError(f"{path}: no phi convs (quantize.quant_resi.*): not a VAR VQVAE")
    if ch % 32:
        raise OfficialCheckpointError(f"{path}: encoder width {ch} is not a multiple of 32 (GroupNorm(32))")
    try:
        return TokenizerConfig(
            ch=int(ch), ch_mult=ch_mult, num_res_blocks=_count(state, "encoder.down.0.block.{}.conv1.weight"),
            downsample=2 ** (levels - 1), vocab_size=int(vocab), cvae=int(cvae), patch_nums=list(patch_nums),
            quant_resi=0.5, share_quant_resi=num_phi, use_attn="encoder.mid.attn_1.qkv.weight" in state,
            in_channels=int(in_channels))
    except ConfigError as exc:
        raise OfficialCheckpointError(f"{path}: {exc}") from exc


def patch_nums_from_state(state: dict, path="<var>") -> list[int]:
    """The scale schedule: from the per-token level buffer ``lvl_1L``, else from the token count."""
    L = state["pos_1LC"].shape[1]
    K = state["lvl_embed.weight"].shape[0]
    if "lvl_1L" in state:
        counts = torch.bincount(state["lvl_1L"].flatten().long(), minlength=K).tolist()
        pn = [math.isqrt(c) for c in counts]
        if any(p * p != c for p, c in zip(pn, counts)) or len(pn) != K:
            raise OfficialCheckpointError(f"{path}: lvl_1L does not describe square scales: tokens per scale {counts}")
    elif L in RELEASE_PATCH_NUMS:
        pn = list(RELEASE_PATCH_NUMS[L])
    else:
        raise OfficialCheckpointError(f"{path}: {L} tokens and no lvl_1L buffer: cannot tell the scale schedule")
    if sum(p * p for p in pn) != L or len(pn) != K:
        raise OfficialCheckpointError(f"{path}: scale schedule {pn} has {sum(p * p for p in pn)} tokens, "
                                      f"pos_1LC has {L} and lvl_embed {K} scales")
    return pn


def var_config_from_state(state: dict, path="<var>") -> TransformerConfig:
    """The :class:`TransformerConfig` a release VAR state dict describes (mask ``causal``)."""
    _require(state, ["class_emb.weight", "pos_start", "pos_1LC", "lvl_embed.weight", "word_embed.weight",
                     "head.weight", "blocks.0.attn.mat_qkv.weight", "blocks.0.ffn.fc1.weight"], path, "VAR")
    if "blocks.0.attn.scale_mul_1H11" not in state:
        raise OfficialCheckpointError(
            f"{path}: no blocks.0.attn.scale_mul_1H11: trained without attn_l2_norm, which the releases "
            "all use and scalewise supports only for its own checkpoints")
    n_cls, C = state["class_emb.weight"].shape
    depth = _count(state, "blocks.{}.attn.mat_qkv.weight")
    m = re.search(r"var_d(\d+)", Path(str(path)).name)
    if m and int(m.group(1)) != depth:
        raise OfficialCheckpointError(f"{path}: the file name says depth {m.group(1)} but it holds {depth} blocks")
    try:
        return TransformerConfig(
            depth=depth, width=int(C), heads=int(state["blocks.0.attn.scale_mul_1H11"].shape[1]),
            mlp_ratio=state["blocks.0.ffn.fc1.weight"].shape[0] / C, vocab_size=int(state["head.weight"].shape[0]),
            cvae=int(state["word_embed.weight"].shape[1]), patch_nums=patch_nums_from_state(state, path),
            num_classes=int(n_cls) - 1, mask_kind="causal", shared_aln="shared_ada_lin.1.weight" in state)
    except ConfigError as exc:
        raise OfficialCheckpointError(f"{path}: {exc}") from exc


# ----------------------------------------------------------------------------- mapping


def _derived_var_buffers(cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    """The buffers a release VAR stores and our config derives."""
    out = {"lvl_1L": scale_ids(cfg.patch_nums).long().view(1, -1),
           "attn_bias_for_masking": attn_bias(cfg.patch_nums, "causal").float().view(1, 1, cfg.num_tokens, -1)}
    for i in range(cfg.depth):
        out[f"blocks.{i}.attn.zero_k_bias"] = torch.zeros(cfg.width)
    return out


def _load_checked(model: torch.nn.Module, state: dict, path, what: str) -> None:

    load_state_checked(model, state, path, f"the {what} architecture read from its own tensors",
                       OfficialCheckpointError, assign=True)


def tokenizer_from_state(state: dict, patch_nums: list[int], path="<vae>") -> tuple[Tokenizer, dict]:
    """(our Tokenizer with the release weights, the release buffers kept aside)."""
    cfg = vae_config_from_state(state, patch_nums, path)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        model = Tokenizer(cfg)
    mapped, extras = {}, {}
    for k, v in state.items():
        m = NON_SHARED.match(k)
        if k == VAE_STATS_KEY:
            extras[k] = v
        elif k.startswith(QUANT_RESI_SINGLE):
            mapped[QUANT_RESI_LIST + "0." + k[len(QUANT_RESI_SINGLE):]] = v
        elif m:
            mapped[QUANT_RESI_LIST + k[len("quantize.quant_resi."):]] = v
        else:
            mapped[k] = v
    mapped["quantize.usage_ema"] = torch.zeros(cfg.vocab_size, device=state["quantize.embedding.weight"].device)
    _load_checked(model, mapped, path, "VQVAE")
    return model.eval(), extras


def transformer_from_state(state: dict, path="<var>") -> tuple[ScaleTransformer, dict]:
    """(our ScaleTransformer with the release weights, the release buffers kept aside)."""
    cfg = var_config_from_state(state, path)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        model = ScaleTransformer(cfg)
    derived = _derived_var_buffers(cfg)
    extras = {k: v for k, v in state.items() if k in derived}
    for k, v in extras.items():
        want = derived[k].to(v.device)
        if v.shape != want.shape or not torch.equal(v.to(want.dtype), want):
            raise OfficialCheckpointError(f"{path}: buffer {k} differs from the block-causal VAR layout of "
                                          f"scales {cfg.patch_nums}; not a VAR checkpoint this loader understands")
    mapped = {k: v for k, v in state.items() if k not in derived}
    _load_checked(model, mapped, path, "VAR")
    model.rebuild_derived_buffers_(state["class_emb.weight"].device)
    return model.eval(), extras


def load_official_var(vae_path: str | os.PathLike, var_path: str | os.PathLike,
                      device: str | torch.device = "cpu") -> OfficialModels:
    """Our tokenizer and transformer from the official release files, in eval mode on ``device``.

    The architecture (depth, width, heads, classes, scales, VAE channels) comes from the
    tensors. Raises :class:`OfficialCheckpointError` (a ValueError) naming the file for a
    missing / truncated file, a non-VAR state dict, a missing / unexpected / mis-shaped key,
    or a VAR whose codebook size or code width differs from the VAE's.
    """
    vae_state = read_state_dict(vae_path, "VQVAE", device)
    var_state = read_state_dict(var_path, "VAR", device)
    if "class_emb.weight" in vae_state or "encoder.conv_in.weight" in var_state:
        raise OfficialCheckpointError(f"the VAE and VAR files look swapped: {vae_path} / {var_path}")
    transformer, var_extras = transformer_from_state(var_state, var_path)
    tcfg = transformer.cfg
    _require(vae_state, ["quantize.embedding.weight"], vae_path, "VQVAE")
    V, Cvae = vae_state["quantize.embedding.weight"].shape
    if (V, Cvae) != (tcfg.vocab_size, tcfg.cvae):
        raise OfficialCheckpointError(
            f"{var_path} expects a VAE with {tcfg.vocab_size} codes of width {tcfg.cvae}, "
            f"but {vae_path} has {V} codes of width {Cvae}: use the VAE the VAR was trained with")
    tokenizer, vae_extras = tokenizer_from_state(vae_state, tcfg.patch_nums, vae_path)
    return OfficialModels(tokenizer.to(device), transformer.to(device), vae_extras, var_extras,
                          list(vae_state), list(var_state), phi_layout(vae_state))


# ----------------------------------------------------------------------------- writing


def official_state_dicts(models: OfficialModels) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(VQVAE, VAR) state dicts in the release layout; the kept-aside buffers are restored."""
    tcfg = models.transformer.cfg
    if tcfg.mask_kind != "causal" or tcfg.masked_objective:
        raise ValueError(f"only a causal VAR without the masked objective has a release layout "
                         f"(mask_kind={tcfg.mask_kind!r}, masked_objective={tcfg.masked_objective})")
    tok_state = models.tokenizer.state_dict()
    vae = {k: v for k, v in tok_state.items() if k != "quantize.usage_ema"}
    if models.phi_layout == "shared" or models.tokenizer.cfg.share_quant_resi == 1:
        single = QUANT_RESI_LIST + "0."
        vae = {(QUANT_RESI_SINGLE + k[len(single):] if k.startswith(single) else k): v for k, v in vae.items()}
    elif models.phi_layout == "non_shared":
        vae = {("quantize.quant_resi." + k[len(QUANT_RESI_LIST):] if k.startswith(QUANT_RESI_LIST) else k): v
               for k, v in vae.items()}
    vae[VAE_STATS_KEY] = models.vae_extras.get(
        VAE_STATS_KEY, torch.zeros(len(models.tokenizer.cfg.patch_nums), models.tokenizer.cfg.vocab_size))
    var = dict(models.transformer.state_dict())
    for k, v in _derived_var_buffers(tcfg).items():
        var[k] = models.var_extras.get(k, v)
    return _ordered(vae, models.vae_keys), _ordered(var, models.var_keys)


def _ordered(state: dict, order: list[str]) -> dict:
    first = [k for k in order if k in state]
    return {k: state[k] for k in first + [k for k in state if k not in set(first)]}


def save_official_var(models: OfficialModels, vae_path: str | os.PathLike, var_path: str | os.PathLike) -> None:
    """Write the models as release-layout files (atomically), loadable by the official code."""
    vae, var = official_state_dicts(models)
    save_torch(vae_path, {k: v.detach().cpu() for k, v in vae.items()})
    save_torch(var_path, {k: v.detach().cpu() for k, v in var.items()})


# ----------------------------------------------------------------------------- pipeline import

TOKENIZER_FIELDS = ("ch", "ch_mult", "num_res_blocks", "downsample", "vocab_size", "cvae", "share_quant_resi",
                    "use_attn", "in_channels")


def _differences(got, want, fields) -> list[str]:
    return [f"{f}: file {getattr(got, f)!r} vs params {getattr(want, f)!r}"
            for f in fields if getattr(got, f) != getattr(want, f)]


def release_tokenizer(path: str | os.PathLike, expected: TokenizerConfig, where: str,
                      device: str | torch.device = "cpu") -> Tokenizer:
    """The release VQVAE at ``path`` as our tokenizer, for the scales of ``expected``.

    Its architecture must equal ``expected`` (the params section ``where``), so params always
    describe the model in use; any difference is an error listing the fields.
    """
    state = read_state_dict(path, "VQVAE", device)
    tok, _ = tokenizer_from_state(state, expected.patch_nums, path)
    diffs = _differences(tok.cfg, expected, TOKENIZER_FIELDS)
    if diffs:
        raise OfficialCheckpointError(f"{path}: the release VQVAE differs from {where}: {'; '.join(diffs)}; "
                                      "set those params to the file's values")
    return tok.to(device)


TRANSFORMER_FIELDS = ("depth", "width", "heads", "mlp_ratio", "mask_kind")


def release_transformer(path: str | os.PathLike, tokenizer: Tokenizer, num_classes: int,
                        expected: TransformerConfig, where: str,
                        device: str | torch.device = "cpu") -> ScaleTransformer:
    """The release VAR at ``path`` as our transformer, checked against ``tokenizer``, the data's classes
    and ``expected`` (the params section ``where``: SRDD and distillation start from this architecture)."""
    state = read_state_dict(path, "VAR", device)
    model, _ = transformer_from_state(state, path)
    diffs = _differences(model.cfg, expected, TRANSFORMER_FIELDS)
    if diffs:
        raise OfficialCheckpointError(f"{path}: the release VAR differs from {where}: {'; '.join(diffs)}; "
                                      "set those params (and the variant's mask_kind: causal) to the file's values")
    c, k = model.cfg, tokenizer.cfg
    if (c.vocab_size, c.cvae, list(c.patch_nums)) != (k.vocab_size, k.cvae, list(k.patch_nums)):
        raise OfficialCheckpointError(
            f"{path}: (codes, code width, scales) = {(c.vocab_size, c.cvae, c.patch_nums)} but the tokenizer has "
            f"{(k.vocab_size, k.cvae, k.patch_nums)}: use the release VQVAE and its scale schedule")
    if c.num_classes != num_classes:
        raise OfficialCheckpointError(
            f"{path}: has {c.num_classes} classes but the prepared data has {num_classes}; the release expects "
            "all 1000 ImageNet class folders (named by synset, so that sorted order is the ImageNet order)")
    return model.to(device)
