"""``scalewise bench sample|train|restore``: speed / memory benchmarks, JSON out."""

from __future__ import annotations

import argparse
import sys

from scalewise.cli.args import ints


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
        mask_kinds = args.mask_kinds.split(",")
        if args.what == "sample":
            recs = bench_sample_side_by_side(spec, mask_kinds, args.batch_sizes, args.cfg, args.runs, args.warmup,
                                             args.device, dtype, compile=args.compile,
                                             infer_modes=tuple(args.infer_modes.split(",")))
            for rec in recs:
                rec.update(peak_gflop_per_s=peak, peak_measured=not given, bf16_native=bf16_native(args.device),
                           fraction_of_peak=rec["total_gflop_per_s"] / peak,
                           transformer_fraction_of_peak=rec["transformer_gflop_per_s"] / peak)
                records.append(rec)
                print(json.dumps({k: rec[k] for k in ("mask_kind", "infer_mode", "dtype", "batch_size", "images_per_s",
                                                      "ms_per_image", "cache_bytes")}), file=sys.stderr)
        else:
            for mask_kind in mask_kinds:
                records.append(bench_train(spec, mask_kind, args.batch_size, args.runs, args.warmup, args.device, dtype))
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
    from scalewise.posterior.guidance_config import guidance_config
    from scalewise.posterior.tasks import standard_task

    over = {k: getattr(args, k) for k in ("grad_steps", "guide_from_scale") if getattr(args, k) is not None}
    methods = tuple(m for m in args.methods.split(",") if m)
    if (args.model is None) != (args.tokenizer is None):
        raise ValueError("bench restore: give both --model and --tokenizer, or neither (random weights)")
    pairs = ([(load_transformer(args.model, args.device), load_tokenizer(args.tokenizer, args.device))]
             if args.model else [random_models(spec, mask_kind, args.device) for mask_kind in args.mask_kinds.split(",")])
    records = []
    for model, tok in pairs:
        for task in args.tasks.split(","):
            config = guidance_config({"preset": args.preset, **over}, "scalewise bench restore",
                                     operator_kind=standard_task(task)["kind"],  # the preset's settings for this task
                                     operator_settings=standard_task(task))
            for batch in args.batch_sizes:
                rec = bench_restore(model, tok, task, batch, config, methods, args.runs, args.warmup)
                records.append(rec)
                print(json.dumps({k: rec[k] for k in ("task", "mask_kind", "batch_size", "ratio_to_prior")}),
                      file=sys.stderr)
    return records


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed/memory benchmark of sampling or training; prints JSON")
    p.add_argument("what", choices=["sample", "train", "restore"])
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--width", type=int, default=0, help="0 = 64 * depth")
    p.add_argument("--heads", type=int, default=0, help="0 = depth")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--downsample", type=int, default=16)
    p.add_argument("--patch-nums", type=ints, default=[1, 2, 3, 4, 5, 6, 8])
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--cvae", type=int, default=32)
    p.add_argument("--tokenizer-ch", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--cfg", type=float, default=1.5)
    p.add_argument("--mask-kinds", default="causal,markov", help="attention mask kinds: causal (VAR), markov (SRDD), markov_prev")
    p.add_argument("--batch-sizes", type=ints, default=[1, 8])
    p.add_argument("--infer-modes", default="baseline", help="bench sample: comma-separated baseline, guidance "
                   "(the learned temperature / CFG heads), timed side by side")
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
    p.add_argument("--preset", default="default", help="bench restore: guidance preset (default | fast)")
    p.add_argument("--grad-steps", type=int, default=None, help="bench restore: gradient steps per guided scale "
                   "(default: the preset's)")
    p.add_argument("--guide-from-scale", type=int, default=None, help="bench restore: first guided scale (0-based; "
                   "default: the preset's)")
    p.add_argument("--model", default=None, help="bench restore: a transformer checkpoint instead of random weights")
    p.add_argument("--tokenizer", default=None, help="bench restore: the tokenizer checkpoint (with --model)")
    p.add_argument("--json", default=None, help="also write the JSON list here")
    p.set_defaults(func=cmd_bench)
