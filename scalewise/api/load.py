"""``scalewise.load``: a :class:`~scalewise.api.pipeline.Pipeline` from model files, the official
VAR release, or an MLflow model URI."""

from __future__ import annotations

import os
from pathlib import Path

from scalewise.api.pipeline import Pipeline
from scalewise.core.uris import is_model_uri


def load(model: str | os.PathLike | None = "models/srdd.pt", tokenizer: str | os.PathLike | None = None,
         official_vae: str | os.PathLike | None = None, official_var: str | os.PathLike | None = None,
         heads: str | os.PathLike | None = None, device: str = "cpu", dtype: str = "fp32",
         compile: bool = False) -> Pipeline:
    """A pipeline to sample and restore with, in eval mode.

    Args:
        model: our transformer file (``models/var.pt``, ``models/srdd.pt``, ...) or an MLflow
            model URI (``models:/scalewise-srdd@champion``: the logged bundle brings its tokenizer).
        tokenizer: the tokenizer file the model was trained with (default ``models/tokenizer.pt``
            next to a model file; the bundle's own for a URI).
        official_vae, official_var: the official VAR release's files (``vae_ch160v4096z32.pth``
            and ``var_d<depth>.pth``), both, in place of ``model`` / ``tokenizer``.
        heads: the model's sampling heads file (``models/srdd_heads.pt``) for ``infer_mode``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; dtype: ``fp32`` | ``bf16`` | ``bf16-autocast``.
    Raises FileNotFoundError / ValueError naming the file or URI that is missing or wrong.
    """
    from scalewise.core.device import resolve_device
    from scalewise.core.precision import prepare_for_inference
    from scalewise.models.checkpoints import load_heads, load_models
    from scalewise.models.student import tokenizer_for

    resolve_device(device)  # a missing CUDA is an error about the device, not about a model file
    if (official_vae is None) != (official_var is None):
        raise ValueError("give both official_vae and official_var (the official release's VQVAE and VAR files)")
    if official_vae is not None:
        for what, path in (("official_vae", official_vae), ("official_var", official_var)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{what} {path}: no such file; download it from the official VAR release")
        transformer, tok = load_models(None, None, official_vae, official_var, device)
    elif is_model_uri(model):
        from scalewise.api.download import download_sampler

        with download_sampler(str(model)) as files:
            transformer, tok = load_models(files["transformer"], tokenizer or files["tokenizer"], device=device)
    else:
        if model is None:
            raise ValueError("give a model file, an MLflow model URI, or official_vae and official_var")
        tokenizer = tokenizer if tokenizer is not None else Path(model).parent / "tokenizer.pt"
        for what, path in (("model", model), ("tokenizer", tokenizer)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{what} {path}: no such model file (`make repro` trains the models)")
        transformer, tok = load_models(model, tokenizer, device=device)
    tok = tokenizer_for(transformer, tok)  # a distilled student samples a subset of the tokenizer's scales
    head_modules = None
    if heads is not None:
        head_modules, transformer = load_heads(heads, transformer, device)
    prepare_for_inference(transformer, tok, dtype, compile)
    return Pipeline(transformer, tok, head_modules, device, dtype)
