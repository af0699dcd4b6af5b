"""Paired standard errors: how far a difference between two methods' mean PSNR on the same images holds.

Two methods restored the same N images; the difference of their means is the mean of the
per-image differences, whose standard error is ``std(a - b, ddof=1) / sqrt(N)``. It is much
smaller than either method's own spread when the images' difficulty dominates (it does here:
a hard image is hard for every method), so a T4 margin is judged against it, not against the
unpaired spreads.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch


def paired_se(a_N: torch.Tensor, b_N: torch.Tensor) -> float:
    """Standard error of ``mean(a - b)`` for per-image values of one set of images, each (N,).

    NaN for fewer than 2 images. Raises ``ValueError`` when the shapes differ.
    """
    if a_N.shape != b_N.shape or a_N.dim() != 1:
        raise ValueError(f"paired_se: need two (N,) tensors of one shape, got {tuple(a_N.shape)} and {tuple(b_N.shape)}")
    n = a_N.numel()
    if n < 2:
        return math.nan
    return float((a_N.double() - b_N.double()).std(unbiased=True) / math.sqrt(n))


def mean_se(a_N: torch.Tensor) -> float:
    """Standard error of ``mean(a)`` over N images (NaN for fewer than 2)."""
    return paired_se(a_N, torch.zeros_like(a_N))


def read_per_image(path: Path | str, column: str = "psnr") -> dict[str, dict[int, float]]:
    """``{method: {image index: value}}`` from a reconstruct stage's ``per_image.csv``.

    The file has the header ``method,index,psnr,ssim,consistency``; a missing file or column
    raises an error naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no per-image scores (run `dvc repro reconstruct`)")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or column not in reader.fieldnames or "method" not in reader.fieldnames \
                or "index" not in reader.fieldnames:
            raise ValueError(f"{path}: expected the columns method, index and {column}, got {reader.fieldnames}")
        out: dict[str, dict[int, float]] = {}
        for row in reader:
            out.setdefault(row["method"], {})[int(row["index"])] = float(row[column])
    return out


def paired_columns(per_image: dict[str, dict[int, float]], method: str,
                   references: tuple[str, ...] = ("prior", "clamp")) -> dict[str, float]:
    """``psnr_se`` of ``method`` and ``psnr_se_vs_<ref>`` for each reference present, on shared images."""
    own = per_image[method]
    out = {"psnr_se": mean_se(torch.tensor(list(own.values())))}
    for ref in references:
        if ref not in per_image or ref == method:
            continue
        shared = sorted(set(own) & set(per_image[ref]))
        out[f"psnr_se_vs_{ref}"] = paired_se(torch.tensor([own[i] for i in shared]),
                                             torch.tensor([per_image[ref][i] for i in shared]))
    return out
