"""Test helpers importable from every test module as ``swtest`` (``tests/`` is on sys.path;
the name avoids the top-level ``tests`` package that torch-fidelity installs)."""

from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def digits_u8(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits upsampled to ``size``: uint8 (N, 1, size, size), labels (N,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0, 255).round().to(torch.uint8), torch.tensor(d.target)


TINY_MODEL = dict(ch=8, ch_mult=[1, 2, 2], num_res_blocks=1, downsample=4, vocab_size=64, cvae=8,
                  patch_nums=[1, 2, 3, 4], quant_resi=0.5, share_quant_resi=2, beta=0.25, in_channels=1)
