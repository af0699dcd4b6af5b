"""``scalewise sample``: a checkpoint -> a PNG grid or a folder of PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalewise.cli.args import (
    HelpFormatter, add_model_args, check_model_files, ints, nonneg_float, nonneg_int, positive_float, positive_int,
)
from scalewise.sampling.adaptive import INFER_MODES


def cmd_sample(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from scalewise.models.checkpoints import load_heads, load_models
    from scalewise.core.images import save_grid, save_png, to_uint8
    from scalewise.core.precision import autocast, prepare_for_inference
    from scalewise.sampling.adaptive import uses_policy
    from scalewise.sampling.generate import Resample, generate

    check_model_files(args)
    model, tokenizer = load_models(args.model, args.tokenizer, args.official_tokenizer, args.official_var, args.device)
    heads = None
    if args.heads:
        heads, model = load_heads(args.heads, model, args.device)
    elif args.infer_mode != "baseline":
        raise ValueError(f"--infer-mode {args.infer_mode} needs the model's sampling heads: pass --heads "
                         "(e.g. models/srdd_heads.pt, written by dvc repro train_heads)")
    prepare_for_inference(model, tokenizer, args.dtype, args.compile)
    if args.classes is None and model.num_classes > 100:
        raise ValueError(f"the model has {model.num_classes} classes: choose some with --classes (e.g. 207,360)")
    classes = args.classes if args.classes is not None else list(range(model.num_classes))
    labels = torch.tensor(classes).repeat_interleave(args.per_class)
    kind = args.resample or ("masked" if uses_policy(args.infer_mode) else "none")
    resample = Resample(kind=kind, threshold=args.resample_threshold, iters=args.resample_iters,
                        use_cfg=not args.resample_no_cfg)
    chunks = labels.split(args.batch_size)
    images = []
    for i, chunk in enumerate(tqdm(chunks, desc="sampling", unit="batch", disable=len(chunks) == 1)):
        with autocast(args.device, args.dtype):
            g = generate(model, tokenizer, chunk, cfg=args.cfg, cfg_schedule=args.cfg_schedule, top_k=args.top_k,
                         top_p=args.top_p, temperature=args.temperature, seed=args.seed + i, resample=resample,
                         infer_mode=args.infer_mode, heads=heads)
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
