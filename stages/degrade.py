"""DVC stage ``degrade``: measurements ``y = A(x) + sigma_y * n`` of the test images, per task.

Reads ``params.yaml: degrade`` (tasks and their operator settings, number of images, noise,
seed, validation images); writes ``data/degraded/<task>.pt`` (``y``, the operator with its
masks/kernels as data, the test-set indices and labels, ``sigma_y`` on the [-1, 1] scale, the
seed), ``data/degraded/<task>.png`` (the first observations) and ``data/degraded/manifest.json``.
With ``validation_images > 0`` it also writes ``data/degraded/validation/<task>.pt`` (same
format and operator settings) for a disjoint random subset of the test split, with its own seed
for the subset, the random masks and the noise: posterior settings are tuned there, never on
the reported images.

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
from scalewise.posterior.tasks import DegradeConfig, select_images, select_validation, task_operator
from scalewise.posterior.restoration import observation_image
from scalewise.project.entry import load_params, run_main, tracked, stage_config, stage_parser


def degrade_set(cfg: DegradeConfig, where: str, test_u8: torch.Tensor, test_labels: torch.Tensor,
                idx: torch.Tensor, folder: Path, validation: bool) -> dict[str, dict]:
    """Measure the test images ``idx`` for every task into ``folder/<task>.pt``; the manifest's task entries."""
    x = to_unit(test_u8[idx])
    size, channels = x.shape[-1], x.shape[1]
    seed = cfg.validation_seed if validation else cfg.seed
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for ti, (name, spec) in enumerate(sorted(cfg.tasks.items())):
        mask_seed, noise_seed = cfg.task_seeds(ti, validation)
        try:
            op = task_operator(name, spec, size, channels, num_images=idx.numel(), seed=mask_seed)
        except ValueError as exc:
            raise ConfigError(f"{where}.tasks: {exc}") from exc
        y = op.measure(x, cfg.sigma_y, torch.Generator().manual_seed(noise_seed))
        save_torch(folder / f"{name}.pt", {
            "task": name, "y": y, "operator": op.state_dict(), "indices": idx, "labels": test_labels[idx],
            "sigma_y": cfg.sigma_y, "seed": seed,
        })
        if not validation:
            save_grid(observation_image(op, y)[:32], folder / f"{name}.png", nrow=8)
        entries[name] = {"kind": spec["kind"], "settings": {k: v for k, v in spec.items() if k != "kind"},
                         "y_shape": list(y.shape), "band": op.band}
        print(f"degrade: {name} ({spec['kind']}){' [validation]' if validation else ''}: y {tuple(y.shape)}")
    return entries


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--out", default="data/degraded")
    args = ap.parse_args()

    params = load_params(args.params)
    where = f"{args.params}: degrade"
    cfg = stage_config(DegradeConfig, params, "degrade", args.params)
    test_u8, test_labels, class_names = load_split(args.data, "test")
    idx = select_images(test_u8.shape[0], cfg.num_images, cfg.seed)
    val_idx = select_validation(test_u8.shape[0], idx, cfg.validation_images, cfg.validation_seed)
    if cfg.validation_images and val_idx.numel() < cfg.validation_images:
        print(f"degrade: only {val_idx.numel()} test images are left for validation "
              f"(asked for {cfg.validation_images}; {idx.numel()} are reported)")

    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    manifest = {"num_images": int(idx.numel()), "sigma_y": cfg.sigma_y, "seed": cfg.seed,
                "validation_images": int(val_idx.numel()), "validation_seed": cfg.validation_seed,
                "sigma_convention": "std of Gaussian noise added to A(x), images in [-1, 1]", "tasks": {}}
    with tracked("degrade", params, to_dict(cfg)) as tracker:
        manifest["tasks"] = degrade_set(cfg, where, test_u8, test_labels, idx, tmp, validation=False)
        if val_idx.numel():
            degrade_set(cfg, where, test_u8, test_labels, val_idx, tmp / "validation", validation=True)
        write_json(tmp / "manifest.json", manifest)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        tracker.log_artifact(out / "manifest.json")
        for name in cfg.tasks:
            tracker.log_artifact(out / f"{name}.png")


if __name__ == "__main__":
    run_main(main)
