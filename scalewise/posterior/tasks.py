"""Restoration tasks: a *task* is a named measurement operator (an operator kind + its settings).

One vocabulary serves the pipeline (``params.yaml: degrade.tasks``, whose names the
``reconstruct@<model>-<task>`` stages take), the benchmark (``scalewise bench restore --tasks``)
and the paper tables. :data:`STANDARD_TASKS` are the six tasks of the default profile, with
sizes relative to the image so they fit any resolution. ``scalewise restore --task`` names the
operator family of a user's own image instead (see :mod:`scalewise.posterior.user_task`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from scalewise.posterior.measurements import OPERATOR_KINDS, Operator, build_operator

STANDARD_TASKS: dict[str, dict[str, Any]] = {
    "box_inpaint": {"kind": "box_inpaint", "size": 0.375, "position": "center"},
    "random_inpaint": {"kind": "random_inpaint", "ratio": 0.7},
    "outpaint": {"kind": "outpaint", "keep": "left"},
    "sr_x2": {"kind": "superres", "factor": 2, "mode": "area"},
    "sr_x4": {"kind": "superres", "factor": 4, "mode": "area"},
    "deblur": {"kind": "gaussian_blur", "kernel_size": 9, "sigma": 2.0},
}


def task_operator(name: str, spec: dict[str, Any], image_size: int, channels: int, num_images: int = 1,
                  seed: int = 0) -> Operator:
    """The operator of task ``name`` from its ``spec`` ``{kind, settings...}``; errors name the task."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"task {name!r}: needs a 'kind' (one of {list(OPERATOR_KINDS)})")
    settings = {k: v for k, v in spec.items() if k != "kind"}
    try:
        return build_operator(spec["kind"], settings, image_size, channels, num_images=num_images, seed=seed)
    except ValueError as exc:
        raise ValueError(f"task {name!r}: {exc}") from exc


def standard_task(name: str) -> dict[str, Any]:
    """The spec of a standard task; a clear error listing them for an unknown name."""
    if name not in STANDARD_TASKS:
        raise ValueError(f"unknown task {name!r}; standard tasks: {list(STANDARD_TASKS)}")
    return STANDARD_TASKS[name]


@dataclass
class DegradeConfig:
    """``params.yaml: degrade``: which measurements the reconstruction stages restore."""

    num_images: int = 64  # test images per task (a seeded random subset of the test split)
    sigma_y: float = 0.05  # Gaussian measurement noise std on the [-1, 1] scale
    seed: int = 0
    validation_images: int = 64  # a disjoint subset for tuning posterior settings (0 = none)
    tasks: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: dict(v) for k, v in STANDARD_TASKS.items()})

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("tasks is empty: define at least one task (see the default params.yaml)")
        if self.num_images < 1 or self.sigma_y < 0:
            raise ValueError("num_images must be >= 1 and sigma_y >= 0")
        if self.validation_images < 0:
            raise ValueError(f"validation_images must be >= 0 (0 = no validation subset), got {self.validation_images}")

    @property
    def validation_seed(self) -> int:
        """The seed of the validation subset (:func:`select_validation`); differs from ``seed``."""
        return self.seed + 1

    def task_seeds(self, task_index: int, validation: bool = False) -> tuple[int, int]:
        """``(mask_seed, noise_seed)`` of the ``task_index``-th task (sorted by name) of one image set.

        The reported set uses ``seed + i`` and ``seed + 1000 + i``; the validation set
        ``validation_seed + 2000 + i`` and ``validation_seed + 3000 + i``: no two (set, task) pairs
        share a seed while there are fewer than 1000 tasks.
        """
        if validation:
            return self.validation_seed + 2000 + task_index, self.validation_seed + 3000 + task_index
        return self.seed + task_index, self.seed + 1000 + task_index


def select_images(num_test: int, num_images: int, seed: int) -> torch.Tensor:
    """A seeded random subset of test indices (all of them when ``num_images`` >= ``num_test``)."""
    perm = torch.randperm(num_test, generator=torch.Generator().manual_seed(seed))
    return perm[: min(num_images, num_test)].sort().values


def select_validation(num_test: int, reported_idx: torch.Tensor, num_images: int, seed: int) -> torch.Tensor:
    """A seeded random subset of the test indices NOT in ``reported_idx``, for tuning posterior settings.

    Returns ``min(num_images, num_test - len(reported))`` sorted indices (int64), disjoint from
    ``reported_idx`` and the same for the same arguments. Pass a ``seed`` other than the reported
    subset's (the degrade stage uses ``seed + 1``).
    """
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    taken = torch.zeros(num_test, dtype=torch.bool)
    taken[torch.as_tensor(reported_idx, dtype=torch.long)] = True
    rest = torch.nonzero(~taken).flatten()  # (num_test - reported,) ascending
    perm = torch.randperm(rest.numel(), generator=torch.Generator().manual_seed(seed))
    return rest[perm[: min(num_images, rest.numel())]].sort().values
