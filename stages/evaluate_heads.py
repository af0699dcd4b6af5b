"""DVC stage ``evaluate_heads``: sample SRDD with its learned heads in every inference mode and score it.

For ``models/<model>.pt`` and ``models/<model>_heads.pt`` (``params.yaml: evaluate_heads``):
each named setting (``infer_mode`` policy / guidance / both, laid over ``evaluate.sampling``)
generates ``evaluate.samples_per_class`` images of every class, in a fresh process when
``evaluate.isolate``, and is scored like ``evaluate@<model>`` (FID, IS, KID, precision, recall
against the test split, speed, steps). Writes ``metrics/evaluate_heads.json`` (``{setting:
record}``; ``report`` merges them into ``metrics/evaluate.json`` beside the model's
``default`` and ``masked``) and a grid per setting in ``reports/evaluate_heads/``.

    python -m stages.evaluate_heads
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from scalewise.core.config import to_dict
from scalewise.core.images import save_grid
from scalewise.core.io import write_json
from scalewise.data.prepare import load_split
from scalewise.evaluation.fidelity import fidelity_metrics, resolve_extractor
from scalewise.evaluation.plan import EvaluateConfig, HeadsEvaluateConfig, folder_name, reference_key
from scalewise.evaluation.settings import SamplingSetting, generate_isolated, generate_set, setting_from
from scalewise.models.checkpoints import load_checkpoint
from scalewise.project.entry import load_params, run_main, stage_config, stage_parser, tracked


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--tokenizer", default="models/tokenizer.pt")
    ap.add_argument("--evaluator", default="models/evaluator.pt")
    ap.add_argument("--cache", default=".cache/fidelity", help="torch-fidelity reference statistics cache")
    args = ap.parse_args()

    params = load_params(args.params)
    ev = stage_config(EvaluateConfig, params, "evaluate", args.params)
    cfg = stage_config(HeadsEvaluateConfig, params, "evaluate_heads", args.params)
    plan = cfg.plan(setting_from(SamplingSetting(), ev.sampling, "evaluate.sampling"))
    model_path, heads_path = Path(f"models/{cfg.model}.pt"), Path(f"models/{cfg.model}_heads.pt")
    for path in (model_path, heads_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (run `dvc repro train_heads`)")
    load_checkpoint(heads_path, "heads")  # a clear error before any process is spawned
    if ev.threads:
        torch.set_num_threads(ev.threads)
    extractor = resolve_extractor(args.evaluator, ev.inception_weights)
    test_u8, _, class_names = load_split(args.data, "test")
    ref_key = reference_key(args.data)
    reports = Path("reports/evaluate_heads")
    results: dict[str, dict[str, Any]] = {}
    with tracked("evaluate_heads", params, {**to_dict(cfg), "evaluate": to_dict(ev)}) as tracker:
        tracker.set_tags({"scalewise.model": cfg.model, "scalewise.extractor": extractor.name})
        for name, mode, setting in tqdm(plan, desc="evaluate_heads"):
            gen = generate_isolated if ev.isolate else generate_set
            s = gen(str(model_path), args.tokenizer, setting, ev.samples_per_class, ev.batch_size, ev.seed,
                    ev.device, ev.threads, infer_mode=mode, heads_path=str(heads_path))
            metrics = fidelity_metrics(s.images_u8, test_u8, extractor, kid_subset_size=ev.kid_subset_size,
                                       cache_dir=args.cache, reference_key=ref_key, device=ev.device)
            metrics.update(images_per_s=s.images_per_s, peak_memory_bytes=s.peak_memory_bytes,
                           cache_bytes=s.cache_bytes, steps=s.steps, samples_per_class=ev.samples_per_class,
                           sweep=False, isolated=ev.isolate, infer_mode=mode, heads=str(heads_path),
                           setting=setting.as_dict())
            results[name] = metrics
            keep = torch.cat([torch.nonzero(s.labels == c).flatten()[:ev.grid_per_class]
                              for c in range(len(class_names))])
            save_grid(s.images_u8[keep].float() / 127.5 - 1, reports / f"{folder_name(name)}.png",
                      nrow=ev.grid_per_class)
            tracker.log_metrics({f"{folder_name(name)}/{k}": float(metrics[k]) for k in
                                 ("fid", "isc", "kid", "precision", "recall", "images_per_s", "steps",
                                  "peak_memory_bytes")})
        path = write_json("metrics/evaluate_heads.json", results)
        tracker.log_artifact(path)
        for grid in sorted(reports.glob("*.png")):
            tracker.log_artifact(grid, "grids")
    print("evaluate_heads: " + "; ".join(f"{n} FID {r['fid']:.2f}, recall {r['recall']:.2f}, "
                                         f"{r['images_per_s']:.0f} img/s" for n, r in results.items()))


if __name__ == "__main__":
    run_main(main)
