"""Argument types and flags shared by several ``scalewise`` commands.

Every type checks its value while the command line is parsed, before anything is loaded, so
a wrong value is a usage error naming its flag (exit 2, no traceback).
"""

from __future__ import annotations

import argparse

from scalewise.core.precision import DTYPES


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default after its help (unless it is None or off), and keeps descriptions'
    own line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _number(kind: type, text: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (a count: images, samples, batch size)."""
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def nonneg_int(text: str) -> int:
    """An integer >= 0."""
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number > 0."""
    value = _number(float, text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def nonneg_float(text: str) -> float:
    """A number >= 0."""
    value = _number(float, text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def superres_factor(text: str) -> int:
    """A super-resolution factor: an integer >= 2 (whether it divides the image size is checked
    once the model is known)."""
    value = _number(int, text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2 (the upscaling factor), got {value}")
    return value


def device_name(text: str) -> str:
    """A torch device this machine has: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if text == "cpu":
        return text  # no torch import for the default
    from scalewise.core.config import ConfigError
    from scalewise.core.device import resolve_device

    try:
        resolve_device(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("use device: cpu", "use --device cpu")) from None
    except RuntimeError as exc:  # torch.device rejects the name itself
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:N, mps): {exc}") from None
    import torch

    device = torch.device(text)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"device={text!r} requested but this machine has "
                                         f"{torch.cuda.device_count()} CUDA device(s)")
    return text


DEFAULT_TOKENIZER = "models/tokenizer.pt"


def tokenizer_path(args: argparse.Namespace) -> str | None:
    """``--tokenizer``, or its default: the model URI's own tokenizer (None) or ``models/tokenizer.pt``."""
    from scalewise.core.uris import is_model_uri

    if args.tokenizer is not None:
        return args.tokenizer
    return None if is_model_uri(args.model) or args.official_tokenizer is not None else DEFAULT_TOKENIZER


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=device_name, default="cpu",
                   help="torch device: cpu, cuda, cuda:N or mps (checked before anything is loaded)")


def add_model_args(p: argparse.ArgumentParser, default_model: str) -> None:
    """Model-file and precision flags shared by ``sample`` and ``restore``."""
    p.add_argument("--model", default=default_model,
                   help="transformer checkpoint (models/var.pt, models/srdd.pt) or an MLflow model URI "
                        "(models:/scalewise-srdd@champion, from the project's mlflow.db or $MLFLOW_TRACKING_URI)")
    p.add_argument("--tokenizer", default=None,
                   help=f"tokenizer checkpoint the model was trained with (default: {DEFAULT_TOKENIZER}; a model URI "
                        "brings its own)")
    p.add_argument("--official-tokenizer", default=None,
                   help="the official VAR release's tokenizer (its VQVAE file, vae_ch160v4096z32.pth); with --official-var "
                        "it replaces --model / --tokenizer")
    p.add_argument("--official-var", default=None, help="the official VAR release's transformer (var_d16.pth, ...)")
    p.add_argument("--dtype", default="fp32", choices=DTYPES,
                   help="bf16: bf16 weights and arithmetic (about 2x faster on CPUs with AVX512-BF16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks (slow first batch)")
    add_device_arg(p)


def check_model_files(args: argparse.Namespace) -> None:
    """A missing model file is an error that says where it comes from, before any loading.

    Our own checkpoints name the DVC stage that writes them (e.g. ``train@var``); the official
    release files say to download them.
    """
    from pathlib import Path

    official = [("--official-tokenizer", args.official_tokenizer), ("--official-var", args.official_var)]
    if (args.official_tokenizer is None) != (args.official_var is None):
        raise ValueError("give both --official-tokenizer and --official-var (the release's VQVAE and VAR files)")
    if any(v is not None for _, v in official):
        for flag, value in official:
            if value is not None and not Path(value).is_file():
                raise FileNotFoundError(f"{flag} {value}: no such file; download it from the official VAR release "
                                        "(vae_ch160v4096z32.pth and var_d<depth>.pth) and pass its path")
        return
    from scalewise.core.uris import is_model_uri

    for flag in ("model", "tokenizer", "heads"):
        value = tokenizer_path(args) if flag == "tokenizer" else getattr(args, flag, None)
        if flag == "model" and is_model_uri(value):
            continue  # resolved (and its errors reported) by the MLflow store
        if value is not None and not Path(value).is_file():
            from scalewise.project.producers import producing_stage

            stage = producing_stage(value)
            hint = (f"`dvc repro {stage}` (or `make repro`) writes it" if stage else
                    "no pipeline stage writes this path: check it, or train a model with `make repro`")
            raise FileNotFoundError(f"--{flag} {value}: no such model file; {hint}")
