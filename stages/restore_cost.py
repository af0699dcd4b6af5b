"""DVC stage ``restore_cost`` (paper/dvc.yaml): guided restoration's cost against the prior's, for T4c.

Reads ``params.yaml: restore_cost`` (guidance variants, methods, repetitions, batch size),
``reconstruct.guidance`` (the base settings the variants change), ``data/degraded/<task>.pt``
for every task and ``models/<model>.pt`` for var and srdd. Writes ``metrics/restore_cost.json``
shaped ``{machine: {cpu, cpu_flags, threads, device}, results: {model: {task: {variant:
{sec_per_image: {method: s}, ratio_to_prior: {method: x}, batch_size, runs, ...}}}}}``: each task's first batch restored by every method, interleaved,
medians of ``runs`` repetitions after a warm-up (:mod:`scalewise.bench.restore_cost`).

    python -m stages.restore_cost [--models var,srdd]
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from scalewise.bench.restore_cost import RestoreCostConfig, restore_cost
from scalewise.core.config import to_dict
from scalewise.core.machine import machine_info
from scalewise.core.io import load_torch, write_json
from scalewise.models.checkpoints import load_tokenizer, load_transformer
from scalewise.posterior.guidance_config import guidance_config
from scalewise.posterior.measurements import Operator
from scalewise.project.entry import load_params, run_main, stage_config, stage_parser, tracked
from scalewise.project.params import section


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--models", default="var,srdd", help="comma-separated transformers: models/<model>.pt")
    ap.add_argument("--degraded", default="data/degraded")
    args = ap.parse_args()
    params = load_params(args.params)
    cfg = stage_config(RestoreCostConfig, params, "restore_cost", args.params)
    where = f"{args.params}: reconstruct.guidance"
    base = dict(section(params, "reconstruct", args.params).get("guidance") or {})
    for name, changes in cfg.variants.items():  # bad settings fail before any model is loaded
        guidance_config({**base, **changes}, f"{where} + restore_cost.variants.{name}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    task_files = sorted(Path(args.degraded).glob("*.pt"))
    if not task_files:
        raise FileNotFoundError(f"{args.degraded}: no degraded tasks (run `dvc repro degrade`)")
    tokenizer = load_tokenizer("models/tokenizer.pt", cfg.device)
    results: dict = {}
    with tracked("restore_cost", params, to_dict(cfg)) as tracker:
        for name in args.models.split(","):
            model = load_transformer(f"models/{name}.pt", cfg.device)
            for path in tqdm(task_files, desc=f"restore_cost[{name}]"):
                deg = load_torch(path)
                op = Operator.from_state_dict(deg["operator"])
                rec = restore_cost(model, tokenizer, op, deg["y"].to(cfg.device), base, cfg, float(deg["sigma_y"]), where)
                results.setdefault(name, {})[path.stem] = rec
                print(f"restore_cost: {name} {path.stem}: " + ", ".join(
                    f"{v} guided {r['ratio_to_prior'].get('guided', float('nan')):.1f}x prior" for v, r in rec.items()))
        out = write_json(Path("metrics/restore_cost.json"), {"machine": machine_info(cfg.device), "results": results})
        tracker.log_metrics({f"{m}/{t}/{v}/ratio_to_prior/{k}": x for m, ts in results.items()
                             for t, vs in ts.items() for v, r in vs.items() for k, x in r["ratio_to_prior"].items()})
        tracker.log_artifact(out)


if __name__ == "__main__":
    run_main(main)
