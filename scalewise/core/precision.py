"""Numeric precision of inference: one name per setting, shared by ``sample``, ``restore`` and ``bench``.

- ``fp32``: fp32 weights and arithmetic.
- ``bf16``: weights cast to bf16, arithmetic in bf16 (half the memory traffic; fastest on CPUs
  with AVX512-BF16 / AMX and on GPUs).
- ``bf16-autocast``: fp32 weights, matrix work autocast to bf16.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

DTYPES = ("fp32", "bf16", "bf16-autocast")


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {list(DTYPES)}")


def autocast(device: torch.device | str, dtype: str):
    """``bf16-autocast``: autocast on the device; ``fp32`` / ``bf16`` (weights cast): nothing."""
    check_dtype(dtype)
    if dtype == "bf16-autocast":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def weight_dtype(dtype: str) -> torch.dtype:
    """Parameter dtype of a setting: bf16 weights for ``bf16``, fp32 otherwise."""
    check_dtype(dtype)
    return torch.bfloat16 if dtype == "bf16" else torch.float32


def bf16_native(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 matrix work runs natively here (AVX512-BF16 / AMX on CPU; any CUDA GPU)."""
    if torch.device(device).type == "cuda":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compile_transformer(model: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
    """Compile every transformer block's forward with ``torch.compile`` (in place; returns the model).

    Each scale has its own token count, so each block compiles once per scale shape (the
    first sample is slow); outputs equal the eager ones within floating-point tolerance.
    """
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for blk in model.blocks:
        blk.compile(backend=backend, dynamic=False)
    return model


def prepare_for_inference(model: torch.nn.Module, tokenizer: torch.nn.Module, dtype: str = "fp32",
                          compile: bool = False) -> None:
    """Cast both models' weights for ``dtype`` and optionally compile the transformer (in place)."""
    wd = weight_dtype(dtype)
    device = next(model.parameters()).device
    if dtype != "fp32" and not bf16_native(device):
        import sys

        print(f"note: {device} has no native bf16 matrix units; --dtype {dtype} will be emulated and slow",
              file=sys.stderr)
    model.to(wd)
    tokenizer.to(wd)
    if compile:
        compile_transformer(model)
