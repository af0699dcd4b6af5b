"""``scalewise sample``: a checkpoint -> a PNG grid or a folder of PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalewise.cli.args import (
    HelpFormatter, add_model_args, check_model_files, ints, nonneg_float, nonneg_int,
    positive_float, positive_int, tokenizer_path,
)
from scalewise.sampling.adaptive import INFER_MODES


def cmd_sample(args: argparse.Namespace) -> int:
    from scalewise.api import load
    from scalewise.core.images import save_grid, save_png, to_uint8
    from scalewise.sampling.adaptive import uses_policy

    check_model_files(args)
    if args.heads is None and args.infer_mode != "baseline":
        raise ValueError(f"--infer-mode {args.infer_mode} needs the model's sampling heads: pass --heads "
                         "(e.g. models/srdd_heads.pt, written by dvc repro train_heads)")
    pipe = load(model=args.model, tokenizer=tokenizer_path(args), official_vae=args.official_tokenizer, official_var=args.official_var,
                heads=args.heads, device=args.device, dtype=args.dtype, compile=args.compile)
    if args.classes is None and pipe.num_classes > 100:
        raise ValueError(f"the model has {pipe.num_classes} classes: choose some with --classes (e.g. 207,360)")
    classes = args.classes if args.classes is not None else list(range(pipe.num_classes))
    bad = [c for c in classes if not 0 <= c < pipe.num_classes]
    if bad:
        raise ValueError(f"--classes {','.join(map(str, bad))}: out of range, the model has {pipe.num_classes} "
                         f"classes (0..{pipe.num_classes - 1})")
    kind = args.resample or ("masked" if uses_policy(args.infer_mode) else "none")
    images, labels = pipe.sample_tensors(
        classes, args.per_class, seed=args.seed, batch_size=args.batch_size, cfg=args.cfg,
        cfg_schedule=args.cfg_schedule, top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
        resample=kind, resample_threshold=args.resample_threshold, resample_iters=args.resample_iters,
        resample_use_cfg=not args.resample_no_cfg, infer_mode=args.infer_mode, progress=True)
    if args.folder:
        for i, (img, label) in enumerate(zip(to_uint8(images), labels.tolist())):
            save_png(img, Path(args.folder) / f"{i:05d}_class{label}.png")
        print(f"wrote {labels.numel()} PNGs to {args.folder}")
    if args.out:
        save_grid(images, args.out, nrow=args.per_class)
        print(f"wrote {args.out} ({len(classes)} classes x {args.per_class})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample images from a trained transformer checkpoint",
                       description="Sample class-conditional images from a trained checkpoint into a PNG grid "
                                   "(one row per class) and, with --folder, one PNG per sample.",
                       formatter_class=HelpFormatter)
    add_model_args(p, "models/var.pt")
    p.add_argument("--classes", type=ints, default=None, help="comma-separated class indices (default: all)")
    p.add_argument("--per-class", type=positive_int, default=4, help="samples per class")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images generated per forward batch")
    p.add_argument("--cfg", type=nonneg_float, default=1.5, help="classifier-free guidance scale (0 = off)")
    p.add_argument("--cfg-schedule", default="linear", choices=["linear", "constant"],
                   help="linear: CFG rises from 0 at the first scale to --cfg at the last; constant: --cfg throughout")
    p.add_argument("--top-k", type=nonneg_int, default=0, help="keep the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=nonneg_float, default=0.0, help="nucleus sampling mass (0 = off)")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="softmax temperature of the draws")
    p.add_argument("--seed", type=int, default=0, help="random seed (batch i uses seed + i)")
    p.add_argument("--resample", default=None, choices=["none", "simple", "masked"],
                   help="token resampling (default: none; masked with --infer-mode policy or both)")
    p.add_argument("--resample-threshold", type=nonneg_float, default=0.05,
                   help="resample the tokens whose probability is below this")
    p.add_argument("--resample-iters", type=nonneg_int, default=2, help="resampling iterations per scale")
    p.add_argument("--resample-no-cfg", action="store_true", help="refinement passes without CFG")
    p.add_argument("--infer-mode", default="baseline", choices=list(INFER_MODES),
                   help="what the learned heads decide: policy (re-masking; --resample-iters is the most "
                        "iterations), guidance (temperature and CFG), both, or nothing (baseline)")
    p.add_argument("--heads", default=None, help="sampling heads file of --model (models/srdd_heads.pt)")
    p.add_argument("--out", default="samples.png", help="PNG grid (one row per class); '' for none")
    p.add_argument("--folder", default=None, help="also write one PNG per sample here")
    p.set_defaults(func=cmd_sample)
