"""DVC stage ``evaluate@<model>``: sample a trained model in every setting and score the samples.

For ``models/<model>.pt`` (``var``, ``srdd``, ``srdd_distilled``): the ``default`` setting
(``params.yaml: evaluate.sampling``), the named ``evaluate.settings``, and, for the models in
``evaluate.sweeps.models``, the sweeps (CFG, masked-resampling threshold x iterations,
top-k, top-p) plus ``masked_tuned_cfg`` (masked resampling at the CFG of the sweep's lowest
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

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from scalewise.models.checkpoints import load_checkpoint
from scalewise.core.config import ConfigError, to_dict
from scalewise.data.prepare import load_split
from scalewise.evaluation.settings import (
    SamplingSetting, best_cfg, generate_isolated, generate_set,
)
from scalewise.evaluation.fidelity import fidelity_metrics, resolve_extractor
from scalewise.core.images import save_grid, save_png
from scalewise.core.io import atomic_dir, write_json
from scalewise.evaluation.plan import TUNED, EvaluateConfig, folder_name, reference_key, setting_plan
from scalewise.project.entry import load_params, run_main, tracked, stage_config, stage_parser

HEADLINE = ("fid", "isc", "kid", "precision", "recall", "images_per_s", "peak_memory_bytes")  # logged per setting


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--model", required=True, help="a model of params.yaml: evaluate.models (models/<model>.pt)")
    ap.add_argument("--tokenizer", default="models/tokenizer.pt")
    ap.add_argument("--evaluator", default="models/evaluator.pt")
    ap.add_argument("--cache", default=".cache/fidelity", help="torch-fidelity reference statistics cache")
    args = ap.parse_args()

    params = load_params(args.params)
    cfg = stage_config(EvaluateConfig, params, "evaluate", args.params)
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
        save_grid(s.images_u8[keep].float() / 127.5 - 1, folder.parent / f"{folder.name}.png",  # not with_suffix:
                  nrow=cfg.grid_per_class)  # "cfg1.5" would become "cfg1.png", one grid for several settings
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
        for name, m in results.items():  # MLflow: the default setting first (_headline), sweeps under sweep/
            key = f"sweep/{folder_name(name)}" if m["sweep"] else folder_name(name)
            tracker.log_metrics({f"{key}/{k}": float(m[k]) for k in HEADLINE})
        tracker.log_metrics({f"_headline/{k}": float(results["default"][k]) for k in HEADLINE})
        tracker.log_artifact(path)
        for grid in sorted(reports.glob("*.png")):
            tracker.log_artifact(grid, "grids")
    d = results["default"]
    print(f"evaluate@{args.model}: {len(results)} settings; default FID {d['fid']:.2f}, IS {d['isc']:.2f}, "
          f"{d['images_per_s']:.1f} img/s ({extractor.name})")


if __name__ == "__main__":
    run_main(main)
