"""Argument types and flags shared by several ``scalewise`` commands."""

from __future__ import annotations

import argparse

from scalewise.core.precision import DTYPES


def ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None



def add_model_args(p: argparse.ArgumentParser, default_model: str) -> None:
    """Model-file and precision flags shared by ``sample`` and ``restore``."""
    p.add_argument("--model", default=default_model, help="transformer checkpoint (models/var.pt, models/srdd.pt)")
    p.add_argument("--tokenizer", default="models/tokenizer.pt")
    p.add_argument("--official-tokenizer", default=None,
                   help="the official VAR release's tokenizer (its VQVAE file, vae_ch160v4096z32.pth); with --official-var "
                        "it replaces --model / --tokenizer")
    p.add_argument("--official-var", default=None, help="the official VAR release's transformer (var_d16.pth, ...)")
    p.add_argument("--dtype", default="fp32", choices=DTYPES,
                   help="bf16: bf16 weights and arithmetic (about 2x faster on CPUs with AVX512-BF16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks (slow first batch)")
    p.add_argument("--device", default="cpu")
