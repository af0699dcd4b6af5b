"""``scalewise bench sample|train|restore``: speed / memory benchmarks, JSON out."""

from __future__ import annotations

import argparse
import sys

from scalewise.cli.args import HelpFormatter, add_device_arg, ints, nonneg_float, nonneg_int, positive_int


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


def _shape_flags() -> argparse.ArgumentParser:
    """The benchmarked model's architecture (random weights), shared by every bench kind."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("model shape (random weights)")
    g.add_argument("--depth", type=positive_int, default=6, help="transformer blocks")
    g.add_argument("--width", type=nonneg_int, default=0, help="transformer width (0 = 64 * depth)")
    g.add_argument("--heads", type=nonneg_int, default=0, help="attention heads (0 = depth)")
    g.add_argument("--image-size", type=positive_int, default=128, help="image side (pixels)")
    g.add_argument("--downsample", type=positive_int, default=16, help="tokenizer downsampling factor")
    g.add_argument("--patch-nums", type=ints, default=[1, 2, 3, 4, 5, 6, 8], help="token-map side per scale")
    g.add_argument("--vocab", type=positive_int, default=4096, help="codebook size")
    g.add_argument("--cvae", type=positive_int, default=32, help="latent channels")
    g.add_argument("--tokenizer-ch", type=positive_int, default=32, help="tokenizer base channels")
    g.add_argument("--num-classes", type=positive_int, default=1000, help="class labels")
    g.add_argument("--mask-kinds", default="causal,markov",
                   help="attention mask kinds: causal (VAR), markov (SRDD), markov_prev")
    return p


def _run_flags() -> argparse.ArgumentParser:
    """How the timings are taken and where the JSON goes, shared by every bench kind."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("measurement")
    g.add_argument("--runs", type=positive_int, default=5, help="timed repetitions (the median is reported)")
    g.add_argument("--warmup", type=nonneg_int, default=1, help="untimed repetitions first")
    g.add_argument("--threads", type=nonneg_int, default=0, help="torch threads (0 = torch default)")
    add_device_arg(g)
    g.add_argument("--json", default=None, help="also write the JSON list here")
    return p


def _peak_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtypes", default="fp32", help="comma-separated: fp32, bf16 (bf16 weights), bf16-autocast")
    p.add_argument("--peak-gflops", type=nonneg_float, default=0.0,
                   help="fp32 matmul peak (GFLOP/s) for fraction_of_peak; 0 = measure it here")
    p.add_argument("--peak-gflops-bf16", type=nonneg_float, default=0.0, help="bf16 matmul peak; 0 = measure it here")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed/memory benchmark of sampling, training or restoring; prints JSON",
                       formatter_class=HelpFormatter)
    kinds = p.add_subparsers(dest="what", required=True, metavar="KIND")
    parents = [_shape_flags(), _run_flags()]
    s = kinds.add_parser("sample", parents=parents, formatter_class=HelpFormatter,
                         help="images/s, memory and fraction of the matmul peak of sampling")
    s.add_argument("--cfg", type=nonneg_float, default=1.5, help="classifier-free guidance scale")
    s.add_argument("--batch-sizes", type=ints, default=[1, 8], help="comma-separated batch sizes")
    s.add_argument("--infer-modes", default="baseline", help="comma-separated baseline, guidance "
                   "(the learned temperature / CFG heads), timed side by side")
    s.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer blocks (compiled in the warm-up runs)")
    _peak_flags(s)
    t = kinds.add_parser("train", parents=parents, formatter_class=HelpFormatter,
                         help="tokens/s and memory of one training step")
    t.add_argument("--batch-size", type=positive_int, default=8, help="training batch size")
    _peak_flags(t)
    r = kinds.add_parser("restore", parents=parents, formatter_class=HelpFormatter,
                         help="seconds per image of each restoration method, side by side with the prior")
    r.add_argument("--batch-sizes", type=ints, default=[1, 8], help="comma-separated batch sizes")
    r.add_argument("--tasks", default="box_inpaint,sr_x4", help="comma-separated tasks "
                   "(box_inpaint, random_inpaint, outpaint, sr_x2, sr_x4, deblur)")
    r.add_argument("--methods", default="prior,clamp,guided,clamp+guided", help="comma-separated methods")
    r.add_argument("--preset", default="default", help="guidance preset (default | fast)")
    r.add_argument("--grad-steps", type=nonneg_int, default=None,
                   help="gradient steps per guided scale (default: the preset's)")
    r.add_argument("--guide-from-scale", type=nonneg_int, default=None,
                   help="first guided scale (0-based; default: the preset's)")
    r.add_argument("--model", default=None, help="a transformer checkpoint instead of random weights")
    r.add_argument("--tokenizer", default=None, help="the tokenizer checkpoint (with --model)")
    for q in (s, t, r):
        q.set_defaults(func=cmd_bench)
