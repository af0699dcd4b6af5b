"""Model files: save and load our tokenizer / transformer / sampling-heads checkpoints (atomic, weights_only)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from scalewise.core.config import from_dict, to_dict
from scalewise.core.digest import weights_hash
from scalewise.core.io import load_torch, save_torch
from scalewise.models.heads import HeadsConfig, SamplingHeads
from scalewise.models.official import load_official_var
from scalewise.models.state import load_state_checked
from scalewise.models.tokenizer import Tokenizer, TokenizerConfig
from scalewise.models.transformer import ScaleTransformer, TransformerConfig


def save_model(path: str | os.PathLike, model: Tokenizer | ScaleTransformer, **extra) -> Path:
    """``{"kind", "config", "state_dict", **extra}`` written atomically."""
    kind = "tokenizer" if isinstance(model, Tokenizer) else "transformer"
    return save_torch(path, {"kind": kind, "config": to_dict(model.cfg), "state_dict": model.state_dict(), **extra})


def load_checkpoint(path: str | os.PathLike, kind: str, device: str | torch.device = "cpu") -> dict:
    """``{"kind", "config", "state_dict", ...}`` of a scalewise model file of ``kind``.

    Raises FileNotFoundError / ValueError naming the file when it is missing, unreadable, not a
    model file, or holds another kind of model.
    """
    obj = load_torch(path, map_location=device)
    if not isinstance(obj, dict) or "state_dict" not in obj or "config" not in obj:
        raise ValueError(f"{path}: not a scalewise {kind} checkpoint (no config/state_dict)")
    if obj.get("kind", kind) != kind:
        raise ValueError(f"{path}: holds a {obj.get('kind')} checkpoint, expected a {kind}")
    return obj


def load_tokenizer(path: str | os.PathLike, device: str | torch.device = "cpu") -> Tokenizer:
    """The tokenizer saved at ``path`` (by the ``train_tokenizer`` stage), in eval mode."""
    obj = load_checkpoint(path, "tokenizer", device)
    model = Tokenizer(from_dict(TokenizerConfig, obj["config"], f"{path}: config"))
    load_state_checked(model, obj["state_dict"], path)
    return model.to(device).eval().channels_last_()


def load_transformer(path: str | os.PathLike, device: str | torch.device = "cpu") -> ScaleTransformer:
    """The transformer saved at ``path`` (by the ``train`` stage), in eval mode."""
    obj = load_checkpoint(path, "transformer", device)
    model = ScaleTransformer(from_dict(TransformerConfig, obj["config"], f"{path}: config"))
    load_state_checked(model, obj["state_dict"], path)
    return model.to(device).eval()


def save_heads(path: str | os.PathLike, heads: SamplingHeads, transformer_hash: str, **extra) -> Path:
    """``{"kind": "heads", "config", "state_dict", "transformer": weights hash, "backbone"?}`` written atomically.

    ``transformer_hash``: :func:`~scalewise.core.digest.weights_hash` of the model file the heads
    were trained on (before any fine-tuning), so that loading them with another transformer
    fails. Pass ``backbone=state_dict`` in ``extra`` when the backbone was fine-tuned with the
    heads (``freeze_backbone: false``).
    """
    return save_torch(path, {"kind": "heads", "config": to_dict(heads.cfg), "state_dict": heads.state_dict(),
                             "transformer": transformer_hash, **extra})


def load_heads(path: str | os.PathLike, transformer: ScaleTransformer,
               device: str | torch.device = "cpu") -> tuple[SamplingHeads, ScaleTransformer]:
    """The sampling heads saved at ``path`` for ``transformer``, and the transformer to use them with.

    That is ``transformer`` itself, or its fine-tuned copy when the file holds a backbone.
    Raises ValueError naming the file when it is not a heads file, its width differs from the
    transformer's, or it was trained on other transformer weights.
    """
    obj = load_checkpoint(path, "heads", device)
    cfg = from_dict(HeadsConfig, obj["config"], f"{path}: config")
    if cfg.width != transformer.cfg.width:
        raise ValueError(f"{path}: heads of a width-{cfg.width} transformer, this transformer has width "
                         f"{transformer.cfg.width}: train the heads on this model (dvc repro train_heads)")
    if obj.get("transformer") != weights_hash(transformer):
        raise ValueError(f"{path}: these heads were trained on other transformer weights (hash "
                         f"{obj.get('transformer')}, this model {weights_hash(transformer)}): retrain them on "
                         "this model (dvc repro train_heads) or pass the model they were trained with")
    heads = SamplingHeads(cfg)
    load_state_checked(heads, obj["state_dict"], path)
    if obj.get("backbone") is not None:
        tuned = ScaleTransformer(transformer.cfg)
        load_state_checked(tuned, obj["backbone"], path, expected="the transformer's config")
        transformer = tuned.to(device).eval()
    return heads.to(device).eval(), transformer


def load_models(model: str | os.PathLike | None = None, tokenizer: str | os.PathLike | None = None,
                official_tokenizer: str | os.PathLike | None = None, official_var: str | os.PathLike | None = None,
                device: str | torch.device = "cpu") -> tuple[ScaleTransformer, Tokenizer]:
    """The (transformer, tokenizer) to sample or restore with, in eval mode.

    Either the official release files (``official_tokenizer``, the release's VQVAE file, and
    ``official_var``, both) or our own checkpoints (``model`` and ``tokenizer``).
    """
    if (official_tokenizer is None) != (official_var is None):
        raise ValueError("give both --official-tokenizer and --official-var (the release's VQVAE and VAR files)")
    if official_tokenizer is not None:
        release = load_official_var(official_tokenizer, official_var, device)
        return release.transformer, release.tokenizer.channels_last_()
    return load_transformer(model, device), load_tokenizer(tokenizer, device)
