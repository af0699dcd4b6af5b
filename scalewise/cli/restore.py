"""``scalewise restore``: restore a user's own image with a trained checkpoint.

    scalewise restore --image photo.png --task inpaint --mask mask.png --out restored.png
    scalewise restore --image small.png --task superres --factor 4 --num-samples 4
    scalewise restore --image blurred.png --task deblur --sigma 2 --method guided

The input is centre-cropped and resized to what the task needs (the model's image size, or
image size / factor for ``superres``); a note says so when that happens.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scalewise.cli.args import (
    HelpFormatter, add_model_args, check_model_files, nonneg_float, nonneg_int, positive_float, positive_int,
    superres_factor,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from scalewise.posterior.guidance_config import PRESETS
    from scalewise.posterior.restoration import ALL_METHODS
    from scalewise.posterior.user_task import USER_TASKS

    p = sub.add_parser("restore", help="restore your own image (inpaint, outpaint, superres, deblur)",
                       description=__doc__, formatter_class=HelpFormatter,
                       epilog="Guidance flags left out take the --preset's value for the task (the README's "
                              "preset table).")
    p.add_argument("--image", required=True, help="the observed image (PNG/JPEG/...)")
    p.add_argument("--task", required=True, choices=USER_TASKS, help="what happened to the image")
    p.add_argument("--mask", default=None, help="inpaint: mask image of the input's size, white = pixels to fill")
    p.add_argument("--factor", type=superres_factor, default=4, help="superres: upscaling factor (>= 2)")
    p.add_argument("--mode", default="area", choices=["area", "bicubic"], help="superres: how y was downsampled")
    p.add_argument("--keep", default="left", choices=["left", "right", "top", "bottom", "center"],
                   help="outpaint: the part of the image that is kept")
    p.add_argument("--kernel-size", type=positive_int, default=9, help="deblur: Gaussian kernel size (odd, pixels)")
    p.add_argument("--sigma", type=positive_float, default=2.0, help="deblur: Gaussian blur std (pixels)")
    p.add_argument("--method", default="guided", choices=[m for m in ALL_METHODS if m != "oracle"],
                   help="guided: posterior sampling, best-consistency particle; guided_mean: particle mean; "
                        "guided+dc: guided projected onto A x = y; classical: bicubic/Wiener/biharmonic")
    add_model_args(p, "models/srdd.pt")
    p.add_argument("--class-label", type=int, default=None, help="class to condition on (default: unconditional)")
    p.add_argument("--num-samples", type=positive_int, default=1, help="independent restorations (posterior samples)")
    p.add_argument("--sigma-y", type=positive_float, default=0.05,
                   help="noise std of the observation on the [-1, 1] scale (the likelihood's width)")
    p.add_argument("--preset", default="default", choices=list(PRESETS),
                   help="guidance settings: default (about 16-18x unguided sampling) or fast (about 3-3.5x)")
    p.add_argument("--cfg", type=nonneg_float, default=None, help="classifier-free guidance (with --class-label)")
    p.add_argument("--alpha", type=nonneg_float, default=None,
                   help="scale of the log-likelihood gradient (1 = exact tilt)")
    p.add_argument("--guide-from-scale", type=nonneg_int, default=None, help="first guided scale (0-based)")
    p.add_argument("--grad-steps", type=nonneg_int, default=None, help="gradient steps per guided scale")
    p.add_argument("--particles", type=positive_int, default=None,
                   help="particles per restoration (SMC between scales)")
    p.add_argument("--relax", default=None, choices=["gumbel", "straight_through"],
                   help="how the gradient passes through the token draw (default: the preset's)")
    p.add_argument("--tau", type=positive_float, default=None, help="relaxation temperature (> 0)")
    p.add_argument("--resample", default=None, choices=["simple", "masked"],
                   help="token resampling after each scale's draw (masked: needs masked_objective)")
    p.add_argument("--resample-select", default=None, choices=["threshold", "lowest"],
                   help="which tokens are resampled: those below --resample-threshold, or the least likely "
                        "quarter under the guided distribution (masked only; default for masked)")
    p.add_argument("--resample-threshold", type=nonneg_float, default=None,
                   help="resample tokens below this probability")
    p.add_argument("--resample-iters", type=nonneg_int, default=None, help="resampling iterations per scale (0 = off)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the posterior samples")
    p.add_argument("--out", default="restored.png", help="PNG: observation | restorations side by side")
    p.add_argument("--folder", default=None, help="also write one PNG per restoration here")
    p.set_defaults(func=cmd_restore)


def cmd_restore(args: argparse.Namespace) -> int:
    import torch

    from scalewise.models.checkpoints import load_models
    from scalewise.core.images import load_image, load_mask, save_grid, save_png, to_uint8
    from scalewise.posterior.guidance_config import guidance_config
    from scalewise.posterior.restoration import observation_image, restore
    from scalewise.posterior.user_task import build_user_task, keep_mask_from_png, observed_size
    from scalewise.core.precision import autocast, prepare_for_inference

    check_model_files(args)
    model, tokenizer = load_models(args.model, args.tokenizer, args.official_tokenizer, args.official_var, args.device)
    prepare_for_inference(model, tokenizer, args.dtype, args.compile)
    size = tokenizer.cfg.downsample * tokenizer.patch_nums[-1]  # the model's image side (pixels)
    channels = tokenizer.cfg.in_channels
    side = observed_size(args.task, size, args.factor)
    raw = load_image(args.image, channels)
    keep = None
    if args.mask is not None:
        if args.task != "inpaint":
            raise ValueError(f"--mask only applies to --task inpaint, not {args.task}")
        keep = keep_mask_from_png(load_mask(args.mask), tuple(raw.shape[-2:]), f"--mask {args.mask}")
    if tuple(raw.shape[-2:]) != (side, side):
        print(f"note: {args.image} is {raw.shape[-1]}x{raw.shape[-2]}; centre-cropped and resized to {side}x{side}",
              file=sys.stderr)
        raw = load_image(args.image, channels, side)
        if keep is not None:
            keep = _resize_mask(keep, side)
    if args.class_label is not None and not 0 <= args.class_label < model.num_classes:
        raise ValueError(f"--class-label {args.class_label} is out of range: the model has {model.num_classes} "
                         f"classes (0..{model.num_classes - 1})")
    op, y = build_user_task(args.task, raw, size, channels, keep, args.factor, args.mode, args.keep,
                            args.kernel_size, args.sigma)
    n = args.num_samples
    op = op if op.num_images is None else op.select([0] * n)
    y_N = y.repeat(n, 1, 1, 1).to(args.device)
    labels = None if args.class_label is None else torch.full((n,), args.class_label, dtype=torch.long)
    if args.resample == "simple" and args.resample_select is None:
        args.resample_select = "threshold"  # simple resampling re-draws by threshold only
    flags = ("cfg", "alpha", "guide_from_scale", "grad_steps", "particles", "relax", "tau", "resample",
             "resample_select", "resample_threshold", "resample_iters")
    config = guidance_config({"preset": args.preset, **{k: getattr(args, k) for k in flags
                                                         if getattr(args, k) is not None}}, "scalewise restore",
                              operator_kind=op.kind, operator_settings=op.settings)  # the preset's settings for this kind of task
    with autocast(args.device, args.dtype):
        res = restore(model, tokenizer, op, y_N, args.method, config, labels, batch_size=n, seed=args.seed,
                      sigma_y=args.sigma_y, progress=True)
    images = res.images.float().cpu()
    obs = observation_image(op, y_N[:1].cpu())
    save_grid(torch.cat((obs, images)), args.out, nrow=1 + n)
    print(f"wrote {args.out} (observation | {n} {args.method} restoration(s), {res.sec_per_image:.2f} s/image)")
    if args.folder:
        for i, img in enumerate(to_uint8(images)):
            save_png(img, Path(args.folder) / f"restored_{i:03d}.png")
        print(f"wrote {n} PNGs to {args.folder}")
    return 0


def _resize_mask(keep_11HW, side: int):
    """Nearest-neighbour resize of a keep mask after the image's centre crop (stays binary)."""
    import torch.nn.functional as F

    from scalewise.core.images import center_square

    top, left, s = center_square(*keep_11HW.shape[-2:])
    crop = keep_11HW[..., top:top + s, left:left + s]
    return F.interpolate(crop, size=(side, side), mode="nearest")
