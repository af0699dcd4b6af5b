"""DVC stage ``posterior_frontier``: PSNR vs seconds of guided sampling, for table T4b.

Reads ``params.yaml: posterior_frontier`` (particles x steps grid, images, batch size),
``reconstruct.guidance`` (the base settings), ``data/degraded/<task>.pt`` for every task and
``models/<model>.pt`` for var and srdd. Writes ``metrics/posterior_frontier.json`` shaped
``{model: {task: {n<N>_s<S>: {particles, steps, psnr, psnr_mean, ssim, consistency,
sec_per_image, ratio_to_prior}}}}``; the point ``clamp`` is the token-clamping baseline on the
same images.

    python -m stages.posterior_frontier [--models var,srdd]
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from scalewise.core.config import to_dict
from scalewise.core.images import to_unit
from scalewise.core.io import load_torch, write_json
from scalewise.data.prepare import load_split
from scalewise.evaluation.frontier import FrontierConfig, frontier
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
    cfg = stage_config(FrontierConfig, params, "posterior_frontier", args.params)
    where = f"{args.params}: reconstruct.guidance"
    base = dict(section(params, "reconstruct", args.params).get("guidance") or {})
    guidance_config(base, where)  # bad settings fail before any model is loaded
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    test_u8, _, _ = load_split(args.data, "test")
    tokenizer = load_tokenizer("models/tokenizer.pt", cfg.device)
    task_files = sorted(Path(args.degraded).glob("*.pt"))
    if not task_files:
        raise FileNotFoundError(f"{args.degraded}: no degraded tasks (run `dvc repro degrade`)")
    results: dict = {}
    with tracked("posterior_frontier", params, {**to_dict(cfg), "guidance": to_dict(guidance_config(base, where))}) as tracker:
        for name in args.models.split(","):
            model = load_transformer(f"models/{name}.pt", cfg.device)
            for path in tqdm(task_files, desc=f"posterior_frontier[{name}]"):
                deg = load_torch(path)
                op = Operator.from_state_dict(deg["operator"])
                n = min(cfg.num_images, deg["y"].shape[0])
                idx = torch.arange(n)
                op = op.select(idx)
                clean = to_unit(test_u8[deg["indices"][:n]])
                points = frontier(model, tokenizer, op, deg["y"][:n].to(cfg.device), clean, base, cfg,
                                  float(deg["sigma_y"]), where)
                results.setdefault(name, {})[path.stem] = points
                best = max((r for p, r in points.items() if p != "clamp"), key=lambda r: r["psnr_mean"])
                print(f"posterior_frontier: {name} {path.stem}: best mean PSNR {best['psnr_mean']:.2f} dB at "
                      f"N={best['particles']}, S={best['steps']} ({best['ratio_to_prior']:.1f}x prior)")
        out = write_json(Path("metrics/posterior_frontier.json"), results)
        tracker.log_metrics({f"{m}/{t}/{p}/{k}": v for m, ts in results.items() for t, ps in ts.items()
                             for p, r in ps.items() for k, v in r.items() if k in ("psnr", "psnr_mean", "ratio_to_prior")})
        tracker.log_artifact(out)


if __name__ == "__main__":
    run_main(main)
