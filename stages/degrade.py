"""DVC stage ``degrade``: measurements ``y = A(x) + sigma_y * n`` of the test images, per task.

Reads ``params.yaml: degrade`` (tasks and their operator settings, number of images, noise,
seed); writes ``data/degraded/<task>.pt`` (``y``, the operator with its masks/kernels as data,
the test-set indices and labels, ``sigma_y`` on the [-1, 1] scale, the seed),
``data/degraded/<task>.png`` (the first observations) and ``data/degraded/manifest.json``.

    python -m stages.degrade [--params params.yaml] [--data data/prepared] [--out data/degraded]
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scalewise.core.config import ConfigError, from_dict, to_dict
from scalewise.data.prepare import load_split
from scalewise.core.images import save_grid, to_unit
from scalewise.core.io import save_torch, write_json
from scalewise.posterior.measurements import TASK_KINDS, build_operator
from scalewise.posterior.restoration import observation_image
from scalewise.project.stage import load_params, run_main, section, tracked


@dataclass
class DegradeConfig:
    num_images: int = 64  # test images per task (a seeded random subset of the test split)
    sigma_y: float = 0.05  # Gaussian measurement noise std on the [-1, 1] scale
    seed: int = 0
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {kind, settings...}


def select_images(num_test: int, num_images: int, seed: int) -> torch.Tensor:
    """A seeded random subset of test indices (all of them when ``num_images`` >= ``num_test``)."""
    perm = torch.randperm(num_test, generator=torch.Generator().manual_seed(seed))
    return perm[: min(num_images, num_test)].sort().values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="data/degraded")
    args = ap.parse_args()

    params = load_params(args.params)
    where = f"{args.params}: degrade"
    cfg = from_dict(DegradeConfig, section(params, "degrade", args.params), where)
    if not cfg.tasks:
        raise ConfigError(f"{where}.tasks is empty: define at least one task (see the default params.yaml)")
    if cfg.num_images < 1 or cfg.sigma_y < 0:
        raise ConfigError(f"{where}: num_images must be >= 1 and sigma_y >= 0")
    test_u8, test_labels, class_names = load_split(args.data, "test")
    idx = select_images(test_u8.shape[0], cfg.num_images, cfg.seed)
    x = to_unit(test_u8[idx])
    size, channels = x.shape[-1], x.shape[1]

    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    manifest = {"num_images": int(idx.numel()), "sigma_y": cfg.sigma_y, "seed": cfg.seed,
                "sigma_convention": "std of Gaussian noise added to A(x), images in [-1, 1]", "tasks": {}}
    with tracked("degrade", params, to_dict(cfg)) as tracker:
        for ti, (name, spec) in enumerate(sorted(cfg.tasks.items())):
            if not isinstance(spec, dict) or "kind" not in spec:
                raise ConfigError(f"{where}.tasks.{name}: needs a 'kind' (one of {list(TASK_KINDS)})")
            settings = {k: v for k, v in spec.items() if k != "kind"}
            try:
                op = build_operator(spec["kind"], settings, size, channels, num_images=idx.numel(), seed=cfg.seed + ti)
            except ValueError as exc:
                raise ConfigError(f"{where}.tasks.{name}: {exc}") from exc
            gen = torch.Generator().manual_seed(cfg.seed + 1000 + ti)
            y = op.measure(x, cfg.sigma_y, gen)
            save_torch(tmp / f"{name}.pt", {
                "task": name, "y": y, "operator": op.state_dict(), "indices": idx, "labels": test_labels[idx],
                "sigma_y": cfg.sigma_y, "seed": cfg.seed,
            })
            save_grid(observation_image(op, y)[:32], tmp / f"{name}.png", nrow=8)
            manifest["tasks"][name] = {"kind": spec["kind"], "settings": settings, "y_shape": list(y.shape),
                                       "band": op.band}
            print(f"degrade: {name} ({spec['kind']}): y {tuple(y.shape)}")
        write_json(tmp / "manifest.json", manifest)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        tracker.log_artifact(out / "manifest.json")
        for name in cfg.tasks:
            tracker.log_artifact(out / f"{name}.png")


if __name__ == "__main__":
    run_main(main)
