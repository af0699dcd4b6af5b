"""DVC stage ``degrade``: measurements ``y = A(x) + sigma_y * n`` of the test images, per task.

Reads ``params.yaml: degrade`` (tasks and their operator settings, number of images, noise,
seed); writes ``data/degraded/<task>.pt`` (``y``, the operator with its masks/kernels as data,
the test-set indices and labels, ``sigma_y`` on the [-1, 1] scale, the seed),
``data/degraded/<task>.png`` (the first observations) and ``data/degraded/manifest.json``.

    python -m stages.degrade [--params params.yaml] [--data data/prepared] [--out data/degraded]
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from scalewise.core.config import ConfigError, to_dict
from scalewise.data.prepare import load_split
from scalewise.core.images import save_grid, to_unit
from scalewise.core.io import save_torch, write_json
from scalewise.posterior.tasks import DegradeConfig, select_images, task_operator
from scalewise.posterior.restoration import observation_image
from scalewise.project.entry import load_params, run_main, tracked, stage_config, stage_parser


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--out", default="data/degraded")
    args = ap.parse_args()

    params = load_params(args.params)
    where = f"{args.params}: degrade"
    cfg = stage_config(DegradeConfig, params, "degrade", args.params)
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
            try:
                op = task_operator(name, spec, size, channels, num_images=idx.numel(), seed=cfg.seed + ti)
            except ValueError as exc:
                raise ConfigError(f"{where}.tasks: {exc}") from exc
            settings = {k: v for k, v in spec.items() if k != "kind"}
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
