"""DVC stage ``reconstruct@<model>-<task>``: restore one task's measurements with every method.

Reads ``params.yaml: reconstruct`` (methods, batch size, conditioning, seed, guidance
settings over their preset), ``data/degraded/<task>.pt``, the clean test images and
``models/<model>.pt``; the likelihood's ``sigma_y`` is the one the measurements were made with.
Writes ``reports/reconstruct/<model>/<task>/``: one folder of PNGs per method, a
side-by-side grid (clean | observation | each method) and ``per_image.csv``; and the DVC
metrics ``metrics/reconstruct/<model>/<task>.json``: ``{method: {psnr, ssim, consistency,
sec_per_image}}`` (means over the images; PSNR in dB, consistency ``||A(x_hat) - y||``; seconds
per image after one untimed warm-up batch per method). The guidance settings are the preset's
for this task's operator kind, under the section's own values.

    python -m stages.reconstruct --model var --task box_inpaint
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from tqdm import tqdm

from scalewise.models.checkpoints import load_tokenizer, load_transformer
from scalewise.core.config import to_dict
from scalewise.data.prepare import load_split
from scalewise.core.images import save_grid, save_png, to_uint8, to_unit
from scalewise.core.io import load_torch, write_json, write_text
from scalewise.posterior.guidance_config import guidance_config
from scalewise.posterior.measurements import Operator
from scalewise.posterior.restoration import (
    ReconstructConfig, applicable_methods, observation_image, oracle_restore, restore_methods, score, side_by_side,
)
from scalewise.project.entry import load_params, run_main, tracked, stage_config, stage_parser

def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--model", required=True, help="a trained transformer: models/<model>.pt (var, srdd, ...)")
    ap.add_argument("--task", required=True, help="a task of params.yaml: degrade.tasks")
    ap.add_argument("--degraded", default="data/degraded")
    args = ap.parse_args()

    params = load_params(args.params)
    where = f"{args.params}: reconstruct"
    cfg = stage_config(ReconstructConfig, params, "reconstruct", args.params)
    guidance_config(cfg.guidance, f"{where}.guidance")  # bad settings fail before any file is read
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    task_file = Path(args.degraded) / f"{args.task}.pt"
    if not task_file.is_file():
        tasks = sorted(p.stem for p in Path(args.degraded).glob("*.pt"))
        raise FileNotFoundError(f"{task_file}: no such degraded task (have {tasks}); add it to degrade.tasks")
    deg = load_torch(task_file)
    op = Operator.from_state_dict(deg["operator"])
    guidance = guidance_config(cfg.guidance, f"{where}.guidance", operator_kind=op.kind,
                               operator_settings=op.settings)
    y = deg["y"]
    test_u8, _, _ = load_split(args.data, "test")
    clean = to_unit(test_u8[deg["indices"]])
    tokenizer = load_tokenizer("models/tokenizer.pt", cfg.device)
    model = load_transformer(f"models/{args.model}.pt", cfg.device)
    labels = deg["labels"] if cfg.conditioning == "class" else None

    out = Path(f"reports/reconstruct/{args.model}/{args.task}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    summary: dict[str, dict[str, float]] = {}
    rows = ["method,index,psnr,ssim,consistency"]
    restored = []
    stage_params = {"model": args.model, "task": args.task, **to_dict(cfg), "guidance": to_dict(guidance)}
    with tracked(f"reconstruct@{args.model}-{args.task}", params, stage_params) as tracker:
        tracker.set_tags({"scalewise.model": args.model, "scalewise.task": args.task})
        methods, skipped = applicable_methods(cfg.methods, op)
        if skipped:
            print(f"reconstruct@{args.model}-{args.task}: skipping {skipped}: the {op.kind} operator has no exact "
                  "pseudo-inverse for the data-consistency projection")
        sampled = [m for m in methods if m != "oracle"]
        results = restore_methods(model, tokenizer, op, y.to(cfg.device), sampled, guidance, labels, cfg.batch_size,
                                  cfg.seed, float(deg["sigma_y"]), progress=True, warmup=True)
        if "oracle" in methods:
            results["oracle"] = oracle_restore(tokenizer, clean.to(cfg.device))
        for method in tqdm(methods, desc=f"{args.model}/{args.task}: scoring"):
            res = results[method]
            images = res.images.cpu()
            s = score(clean, images, op, y)
            summary[method] = {k: float(v.mean()) for k, v in s.items()}
            summary[method]["sec_per_image"] = res.sec_per_image
            folder = tmp / method.replace("+", "_")
            for i, img in enumerate(to_uint8(images)):
                save_png(img, folder / f"{int(deg['indices'][i]):05d}.png")
            rows += [f"{method},{int(deg['indices'][i])},{s['psnr'][i]:.4f},{s['ssim'][i]:.4f},"
                     f"{s['consistency'][i]:.4f}" for i in range(images.shape[0])]
            restored.append(images)
            print(f"reconstruct@{args.model}-{args.task}: {method}: " +
                  ", ".join(f"{k} {v:.4g}" for k, v in summary[method].items()))
        grid = side_by_side(clean, observation_image(op, y), restored, cfg.grid_rows)
        save_grid(grid, tmp / "side_by_side.png", nrow=2 + len(restored))
        write_text(tmp / "per_image.csv", "\n".join(rows) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        metrics_path = write_json(Path(f"metrics/reconstruct/{args.model}/{args.task}.json"), summary)
        tracker.log_metrics({f"{m.replace('+', '_')}/{k}": v for m, vals in summary.items() for k, v in vals.items()})  # MLflow keys allow no "+"
        tracker.log_metrics({f"_headline/{m}_psnr": summary[m]["psnr"] for m in ("guided", "clamp", "classical")
                             if m in summary})
        tracker.log_artifact(out / "side_by_side.png")
        tracker.log_artifact(metrics_path)


if __name__ == "__main__":
    run_main(main)
