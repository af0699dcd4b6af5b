"""What machine a benchmark ran on: the CPU, its vector / matrix flags, threads and device."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")  # what changes CPU timings


def machine_info(device: str = "cpu") -> dict[str, object]:
    """What a benchmark ran on: CPU model, its vector / matrix flags among :data:`CPU_FLAGS`
    (from ``/proc/cpuinfo`` where there is one), torch's thread count and ``device``."""
    model, flags = platform.processor() or platform.machine(), set()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return {"cpu": model, "cpu_flags": [f for f in CPU_FLAGS if f in flags], "threads": torch.get_num_threads(),
            "device": device}
