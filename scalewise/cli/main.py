"""The ``scalewise`` command line.

    scalewise repro [DVC ARGS]   run ``dvc repro`` inside one MLflow pipeline run
    scalewise stage NAME [ARGS]  run one stage outside DVC (debugging)
    scalewise stages             list the pipeline's stages in DVC order
    scalewise sample ...         checkpoint -> PNG grid or folder of PNGs
    scalewise restore ...        restore your own image (inpaint, outpaint, superres, deblur)
    scalewise bench sample|train|restore  speed / memory benchmark, JSON out
    scalewise paper-table [--tables T1,T4]  run what is missing, print the paper tables
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from scalewise.core.allocator import keep_freed_memory



def venv_env() -> dict[str, str]:
    """The environment with this interpreter's bin folder first on PATH (so ``python3`` is ours)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def cmd_stage(args: argparse.Namespace) -> int:
    module = Path("stages") / f"{args.name}.py"
    if not module.is_file():
        available = sorted(p.stem for p in Path("stages").glob("[!_]*.py"))
        print(f"error: unknown stage '{args.name}' (no {module}); available: {available}", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", f"stages.{args.name}", *args.rest], env=venv_env())


def cmd_repro(args: argparse.Namespace) -> int:
    import yaml

    from scalewise.project.tracking import pipeline_run

    params = yaml.safe_load(Path("params.yaml").read_text()) if Path("params.yaml").is_file() else {}
    tracking = (params or {}).get("tracking", {}) or {}
    with pipeline_run(
        "pipeline", enabled=bool(tracking.get("enabled", True)),
        experiment=str(tracking.get("experiment", "scalewise")),
    ) as tracker:
        rc = subprocess.call([sys.executable, "-m", "dvc", "repro", *args.rest], env=venv_env())
        if rc != 0:
            raise SystemExit(rc)
        metrics = Path("metrics")
        if metrics.is_dir():
            tracker.log_artifact(metrics, "metrics")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from dvc.repo import Repo

    with Repo(".") as repo:
        for stage in repo.index.stages:
            print(stage.addressing)
    return 0


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def cmd_sample(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from scalewise.models.checkpoints import load_models
    from scalewise.core.images import save_grid, save_png, to_uint8
    from scalewise.core.precision import autocast, prepare_for_inference
    from scalewise.sampling.generate import Resample, generate

    model, tokenizer = load_models(args.model, args.tokenizer, args.official_vae, args.official_var, args.device)
    prepare_for_inference(model, tokenizer, args.dtype, args.compile)
    if args.classes is None and model.num_classes > 100:
        raise ValueError(f"the model has {model.num_classes} classes: choose some with --classes (e.g. 207,360)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    classes = args.classes if args.classes is not None else list(range(model.num_classes))
    labels = torch.tensor(classes).repeat_interleave(args.per_class)
    resample = Resample(kind=args.resample, threshold=args.resample_threshold, iters=args.resample_iters,
                        use_cfg=not args.resample_no_cfg)
    chunks = labels.split(args.batch_size)
    images = []
    for i, chunk in enumerate(tqdm(chunks, desc="sampling", unit="batch", disable=len(chunks) == 1)):
        with autocast(args.device, args.dtype):
            g = generate(model, tokenizer, chunk, cfg=args.cfg, cfg_schedule=args.cfg_schedule, top_k=args.top_k,
                         top_p=args.top_p, temperature=args.temperature, seed=args.seed + i, resample=resample)
        images.append(g.images.float().cpu())
    images = torch.cat(images)
    if args.folder:
        for i, (img, label) in enumerate(zip(to_uint8(images), labels.tolist())):
            save_png(img, Path(args.folder) / f"{i:05d}_class{label}.png")
        print(f"wrote {labels.numel()} PNGs to {args.folder}")
    if args.out:
        save_grid(images, args.out, nrow=args.per_class)
        print(f"wrote {args.out} ({len(classes)} classes x {args.per_class})")
    return 0


def add_model_args(p: argparse.ArgumentParser, default_model: str) -> None:
    """Model-file and precision flags shared by ``sample`` and ``restore``."""
    p.add_argument("--model", default=default_model, help="transformer checkpoint (models/var.pt, models/srdd.pt)")
    p.add_argument("--tokenizer", default="models/tokenizer.pt")
    p.add_argument("--official-vae", default=None,
                   help="the official VAR release's VQVAE file (vae_ch160v4096z32.pth); with --official-var "
                        "it replaces --model / --tokenizer")
    p.add_argument("--official-var", default=None, help="the official VAR release's transformer (var_d16.pth, ...)")
    from scalewise.core.precision import DTYPES

    p.add_argument("--dtype", default="fp32", choices=DTYPES,
                   help="bf16: bf16 weights and arithmetic (about 2x faster on CPUs with AVX512-BF16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks (slow first batch)")
    p.add_argument("--device", default="cpu")


def _bench_sample_train(args: argparse.Namespace, spec) -> list[dict]:
    import json

    from scalewise.bench.sample import bench_sample_side_by_side, bench_train, matmul_peak_gflops
    from scalewise.core.precision import bf16_native

    records = []
    for dtype in args.dtypes.split(","):
        native = dtype == "fp32" or bf16_native(args.device)
        if not native:
            print(f"warning: this CPU has no native bf16 matrix unit; {dtype} runs emulated and slowly",
                  file=sys.stderr)
        given = args.peak_gflops if dtype == "fp32" else args.peak_gflops_bf16
        peak = given or matmul_peak_gflops(args.device, "fp32" if dtype == "fp32" else "bf16")
        masks = args.masks.split(",")
        if args.what == "sample":
            recs = bench_sample_side_by_side(spec, masks, args.batch_sizes, args.cfg, args.runs, args.warmup,
                                             args.device, dtype, compile=args.compile)
            for rec in recs:
                rec.update(peak_gflop_per_s=peak, peak_measured=not given, bf16_native=bf16_native(args.device),
                           fraction_of_peak=rec["total_gflop_per_s"] / peak,
                           transformer_fraction_of_peak=rec["transformer_gflop_per_s"] / peak)
                records.append(rec)
                print(json.dumps({k: rec[k] for k in ("mask", "dtype", "batch_size", "images_per_s",
                                                      "ms_per_image", "cache_bytes")}), file=sys.stderr)
        else:
            for mask in masks:
                records.append(bench_train(spec, mask, args.batch_size, args.runs, args.warmup, args.device, dtype))
    return records


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    import torch

    from scalewise.bench.sample import BenchModel

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = BenchModel(depth=args.depth, width=args.width or 64 * args.depth, heads=args.heads or args.depth,
                      image_size=args.image_size, downsample=args.downsample, patch_nums=tuple(args.patch_nums),
                      vocab=args.vocab, cvae=args.cvae, tokenizer_ch=args.tokenizer_ch,
                      num_classes=args.num_classes)
    spec.tokenizer_config().check_image_size(args.image_size)
    records = _bench_restore(args, spec) if args.what == "restore" else _bench_sample_train(args, spec)
    text = json.dumps(records, indent=2)
    if args.json:
        from scalewise.core.io import write_text

        write_text(args.json, text + "\n")
    print(text)
    return 0


def _bench_restore(args: argparse.Namespace, spec) -> list[dict]:
    import json

    from scalewise.bench.restore import bench_restore, random_models
    from scalewise.models.checkpoints import load_tokenizer, load_transformer
    from scalewise.posterior.guidance import PosteriorGuidanceConfig

    config = PosteriorGuidanceConfig(grad_steps=args.grad_steps, guide_from_scale=args.guide_from_scale)
    methods = tuple(m for m in args.methods.split(",") if m)
    if (args.model is None) != (args.tokenizer is None):
        raise ValueError("bench restore: give both --model and --tokenizer, or neither (random weights)")
    pairs = ([(load_transformer(args.model, args.device), load_tokenizer(args.tokenizer, args.device))]
             if args.model else [random_models(spec, mask, args.device) for mask in args.masks.split(",")])
    records = []
    for model, tok in pairs:
        for task in args.tasks.split(","):
            for batch in args.batch_sizes:
                rec = bench_restore(model, tok, task, batch, config, methods, args.runs, args.warmup)
                records.append(rec)
                print(json.dumps({k: rec[k] for k in ("task", "mask", "batch_size", "ratio_to_prior")}),
                      file=sys.stderr)
    return records


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scalewise", description="Scale-wise VAR / SRDD pipeline and tools.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("repro", help="run `dvc repro` (extra args passed on) inside one MLflow pipeline run")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_repro)
    p = sub.add_parser("stage", help="run one stage outside DVC, e.g. `scalewise stage train_tokenizer`")
    p.add_argument("name", help="stage module name under stages/ (prepare, train_tokenizer, ...)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the stage")
    p.set_defaults(func=cmd_stage)
    p = sub.add_parser("stages", help="list the pipeline's stages as DVC defines them")
    p.set_defaults(func=cmd_stages)

    p = sub.add_parser("sample", help="sample images from a trained transformer checkpoint")
    add_model_args(p, "models/var.pt")
    p.add_argument("--classes", type=_ints, default=None, help="comma-separated class indices (default: all)")
    p.add_argument("--per-class", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64, help="images generated per forward batch")
    p.add_argument("--cfg", type=float, default=1.5)
    p.add_argument("--cfg-schedule", default="linear", choices=["linear", "constant"])
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=0.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resample", default="none", choices=["none", "simple", "masked"])
    p.add_argument("--resample-threshold", type=float, default=0.05)
    p.add_argument("--resample-iters", type=int, default=2)
    p.add_argument("--resample-no-cfg", action="store_true", help="refinement passes without CFG")
    p.add_argument("--out", default="samples.png", help="PNG grid (one row per class); '' for none")
    p.add_argument("--folder", default=None, help="also write one PNG per sample here")
    p.set_defaults(func=cmd_sample)

    from scalewise.cli.restore import add_parser as add_restore_parser

    add_restore_parser(sub)

    from scalewise.cli.paper_table import add_parser as add_paper_table_parser

    add_paper_table_parser(sub)

    p = sub.add_parser("bench", help="speed/memory benchmark of sampling or training; prints JSON")
    p.add_argument("what", choices=["sample", "train", "restore"])
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--width", type=int, default=0, help="0 = 64 * depth")
    p.add_argument("--heads", type=int, default=0, help="0 = depth")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--downsample", type=int, default=16)
    p.add_argument("--patch-nums", type=_ints, default=[1, 2, 3, 4, 5, 6, 8])
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--cvae", type=int, default=32)
    p.add_argument("--tokenizer-ch", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--cfg", type=float, default=1.5)
    p.add_argument("--masks", default="causal,markov")
    p.add_argument("--batch-sizes", type=_ints, default=[1, 8])
    p.add_argument("--batch-size", type=int, default=8, help="bench train: batch size")
    p.add_argument("--dtypes", default="fp32", help="comma-separated: fp32, bf16 (bf16 weights), bf16-autocast")
    p.add_argument("--compile", action="store_true",
                   help="bench sample: torch.compile the transformer blocks (compiled in the warm-up runs)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--peak-gflops", type=float, default=0.0,
                   help="fp32 matmul peak (GFLOP/s) for fraction_of_peak; 0 = measure it here")
    p.add_argument("--peak-gflops-bf16", type=float, default=0.0, help="bf16 matmul peak; 0 = measure it here")
    p.add_argument("--tasks", default="box_inpaint,sr_x4", help="bench restore: comma-separated tasks "
                   "(box_inpaint, random_inpaint, outpaint, sr_x2, sr_x4, deblur)")
    p.add_argument("--methods", default="prior,clamp,guided,clamp+guided", help="bench restore: methods")
    p.add_argument("--grad-steps", type=int, default=1, help="bench restore: guidance gradient steps per scale")
    p.add_argument("--guide-from-scale", type=int, default=4, help="bench restore: first guided scale (0-based)")
    p.add_argument("--model", default=None, help="bench restore: a transformer checkpoint instead of random weights")
    p.add_argument("--tokenizer", default=None, help="bench restore: the tokenizer checkpoint (with --model)")
    p.add_argument("--json", default=None, help="also write the JSON list here")
    p.set_defaults(func=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
