"""The torch device a run asks for, checked against what this machine has."""

from __future__ import annotations

import torch

from scalewise.core.config import ConfigError

DEVICE_KINDS = ("cpu", "cuda", "mps")


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``; a clear error if it is not available here."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} requested but CUDA is not available; use device: cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name!r} requested but MPS is not available; use device: cpu")
    return device
