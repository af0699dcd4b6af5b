"""DVC stage ``evaluate@<model>``: sample a trained model in every setting and score the samples.

For ``models/<model>.pt`` (``var``, ``srdd``, ``srdd_distilled``): the ``default`` setting
(``params.yaml: evaluate.sampling``), the named ``evaluate.settings``, and, for the models in
``evaluate.sweeps.models``, the sweeps (CFG, masked-resampling threshold x iterations,
top-k, top-p) plus ``masked+tuned_cfg`` (masked resampling at the CFG of the sweep's lowest
FID, with the full sample count). Each setting generates ``samples_per_class`` images of
every class (the non-sweep settings each in a fresh process, so their speed and peak memory
start clean; ``isolated`` in the record says which) and is scored with torch-fidelity against
the test split: FID, IS, KID, precision, recall.

Writes ``metrics/evaluate/<model>.json`` (``{setting: {fid, isc, kid, precision, recall,
images_per_s, peak_memory_bytes, cache_bytes, steps, extractor, ...}}``) and
``reports/evaluate/<model>/``: PNG folders of the non-sweep settings, a grid per setting.

    python -m stages.evaluate --model srdd
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from scalewise.models.checkpoints import load_checkpoint
from scalewise.core.config import ConfigError, from_dict, to_dict
from scalewise.data.prepare import load_split
from scalewise.evaluation.settings import (
    SamplingSetting, SweepConfig, best_cfg, generate_isolated, generate_set, setting_from, sweep_settings,
)
from scalewise.evaluation.fidelity import fidelity_metrics, resolve_extractor
from scalewise.core.images import save_grid, save_png
from scalewise.core.io import atomic_dir, write_json
from scalewise.project.stage import load_params, run_main, section, tracked

TUNED = "masked+tuned_cfg"


@dataclass
class EvaluateConfig:
    """``params.yaml: evaluate``."""

    models: list[str] = field(default_factory=lambda: ["var", "srdd", "srdd_distilled"])
    samples_per_class: int = 100
    batch_size: int = 250
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    kid_subset_size: int = 500
    inception_weights: str | None = None  # inception-v3-compat weights file; null = domain evaluator
    isolate: bool = True  # each non-sweep sample set in a fresh process (clean speed / memory figures)
    grid_per_class: int = 8
    sampling: dict[str, Any] = field(default_factory=dict)  # the `default` setting
    settings: dict[str, Any] = field(default_factory=dict)  # name -> overrides of `sampling`
    sweeps: SweepConfig = field(default_factory=SweepConfig)

    def __post_init__(self) -> None:
        for name in ("samples_per_class", "batch_size", "grid_per_class"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"evaluate.{name} must be >= 1, got {getattr(self, name)}")
        if self.sweeps.samples_per_class < 1:
            raise ConfigError(f"evaluate.sweeps.samples_per_class must be >= 1, got {self.sweeps.samples_per_class}")


def reference_key(data_dir: str | Path) -> str:
    """The name of the test split's cached reference statistics (torch-fidelity adds the extractor's hash)."""
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    return f"test-{manifest['content_hash'][:16]}"


def setting_plan(cfg: EvaluateConfig, model: str) -> list[tuple[str, SamplingSetting, int, bool]]:
    """(name, setting, samples per class, is sweep) in evaluation order; ``masked+tuned_cfg`` is added later."""
    base = setting_from(SamplingSetting(), cfg.sampling, "evaluate.sampling")
    plan = [("default", base, cfg.samples_per_class, False)]
    for name, overrides in cfg.settings.items():
        if name == "default" or name == TUNED:
            raise ConfigError(f"evaluate.settings: {name!r} is a reserved setting name")
        plan.append((name, setting_from(base, overrides or {}, f"evaluate.settings.{name}"), cfg.samples_per_class,
                     False))
    if model in cfg.sweeps.models:
        plan += [(n, s, cfg.sweeps.samples_per_class, True) for n, s in sweep_settings(base, cfg.sweeps).items()]
    return plan


def folder_name(setting: str) -> str:
    """A file-system-safe folder name for a setting (``masked:t=0.05,n=2`` -> ``masked_t0.05_n2``)."""
    return (setting.replace("+", "_").replace(":", "_").replace("=", "").replace(",", "_"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a model of params.yaml: evaluate.models (models/<model>.pt)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--tokenizer", default="models/tokenizer.pt")
    ap.add_argument("--evaluator", default="models/evaluator.pt")
    ap.add_argument("--cache", default=".cache/fidelity", help="torch-fidelity reference statistics cache")
    args = ap.parse_args()

    params = load_params(args.params)
    cfg = from_dict(EvaluateConfig, section(params, "evaluate", args.params), f"{args.params}: evaluate")
    if args.model not in cfg.models:
        raise ConfigError(f"{args.params}: evaluate.models = {cfg.models} has no {args.model!r}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model_path = Path(f"models/{args.model}.pt")
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: no such model (run `dvc repro` for the stage that writes it)")
    extractor = resolve_extractor(args.evaluator, cfg.inception_weights)
    test_u8, test_labels, class_names = load_split(args.data, "test")
    ref_key = reference_key(args.data)
    plan = setting_plan(cfg, args.model)
    if not load_checkpoint(model_path, "transformer")["config"].get("masked_objective", False):
        skipped = [n for n, st, _, _ in plan if st.resample_kind == "masked"]
        plan = [p for p in plan if p[1].resample_kind != "masked"]
        if skipped:
            print(f"evaluate@{args.model}: trained without the masked objective: skipping {skipped}")
    reports = Path(f"reports/evaluate/{args.model}")
    results: dict[str, dict[str, Any]] = {}

    def run(name: str, setting: SamplingSetting, per_class: int, sweep: bool) -> None:
        isolated = cfg.isolate and not sweep  # sweeps share this process: a fresh one costs seconds per point
        gen = generate_isolated if isolated else generate_set
        s = gen(str(model_path), args.tokenizer, setting, per_class, cfg.batch_size, cfg.seed, cfg.device,
                cfg.threads)
        metrics = fidelity_metrics(s.images_u8, test_u8, extractor, kid_subset_size=cfg.kid_subset_size,
                                   cache_dir=args.cache, reference_key=ref_key, device=cfg.device)
        metrics.update(images_per_s=s.images_per_s, peak_memory_bytes=s.peak_memory_bytes,
                       cache_bytes=s.cache_bytes, steps=s.steps, samples_per_class=per_class,
                       sweep=sweep, isolated=isolated, setting=setting.as_dict())
        results[name] = metrics
        folder = reports / folder_name(name)
        keep = torch.cat([torch.nonzero(s.labels == c).flatten()[:cfg.grid_per_class]
                          for c in range(len(class_names))])
        save_grid(s.images_u8[keep].float() / 127.5 - 1, folder.with_suffix(".png"), nrow=cfg.grid_per_class)
        if not sweep:  # every sample as a PNG (never JPEG), written to a temp folder then renamed
            with atomic_dir(folder) as tmp:
                for i, (img, label) in enumerate(zip(s.images_u8, s.labels.tolist())):
                    save_png(img, tmp / f"{i:05d}_class{label}.png")

    if reports.exists():
        shutil.rmtree(reports)
    with tracked(f"evaluate@{args.model}", params, {**to_dict(cfg), "model": args.model}) as tracker:
        tracker.set_tags({"scalewise.model": args.model, "scalewise.extractor": extractor.name})
        for name, setting, per_class, sweep in tqdm(plan, desc=f"evaluate[{args.model}]"):
            run(name, setting, per_class, sweep)
        tuned = best_cfg(results)
        if tuned is not None and any(st.resample_kind == "masked" for _, st, _, _ in plan):
            base = next(s for n, s, _, _ in plan if n == "default")
            run(TUNED, dataclasses.replace(base, cfg=tuned, resample_kind="masked"), cfg.samples_per_class, False)
        path = write_json(f"metrics/evaluate/{args.model}.json", results)
        for name, m in results.items():
            key = folder_name(name)
            tracker.log_metrics({f"{key}/{k}": float(m[k]) for k in
                                 ("fid", "isc", "kid", "precision", "recall", "images_per_s", "peak_memory_bytes")})
        tracker.log_artifact(path)
        for grid in sorted(reports.glob("*.png")):
            tracker.log_artifact(grid, "grids")
    d = results["default"]
    print(f"evaluate@{args.model}: {len(results)} settings; default FID {d['fid']:.2f}, IS {d['isc']:.2f}, "
          f"{d['images_per_s']:.1f} img/s ({extractor.name})")


if __name__ == "__main__":
    run_main(main)
