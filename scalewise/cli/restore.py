"""``scalewise restore``: restore a user's own image with a trained checkpoint.

    scalewise restore --image photo.png --task inpaint --mask mask.png --out restored.png
    scalewise restore --image small.png --task superres --factor 4 --num-samples 4
    scalewise restore --image blurred.png --task deblur --sigma 2 --method guided

The input's centre square is resized to what the task needs (the model's image size, or
image size / factor for ``superres``; a note says so), restored, and pasted back: the
``--folder`` images have the input's size (times the factor for ``superres``), and keep the
observed pixels of inpaint / outpaint unless ``--no-keep-observed``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scalewise.cli.args import (
    HelpFormatter, add_model_args, check_model_files, nonneg_float, nonneg_int, positive_float, positive_int,
    superres_factor, tokenizer_path,
)
from scalewise.core.io import atomic_path


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
    p.add_argument("--out", default="restored.png",
                   help="PNG: observation | restorations side by side, at the model's resolution")
    p.add_argument("--folder", default=None,
                   help="also write one PNG per restoration here, at the input's size (x factor for superres)")
    p.add_argument("--no-keep-observed", action="store_true",
                   help="--folder images: take every pixel from the restoration (default: the observed pixels of "
                        "inpaint / outpaint are the input's own)")
    p.set_defaults(func=cmd_restore)


def cmd_restore(args: argparse.Namespace) -> int:
    import torch

    from scalewise.api import GUIDANCE_SETTINGS, load
    from scalewise.core.images import open_image, save_grid, save_png
    from scalewise.posterior.user_task import observed_size

    check_model_files(args)
    if args.mask is not None and args.task != "inpaint":
        raise ValueError(f"--mask only applies to --task inpaint, not {args.task}")
    image = open_image(args.image)
    pipe = load(model=args.model, tokenizer=tokenizer_path(args), official_vae=args.official_tokenizer,
                official_var=args.official_var, device=args.device, dtype=args.dtype, compile=args.compile)
    if args.class_label is not None and not 0 <= args.class_label < pipe.num_classes:
        raise ValueError(f"--class-label {args.class_label} is out of range: the model has {pipe.num_classes} "
                         f"classes (0..{pipe.num_classes - 1})")
    side = observed_size(args.task, pipe.image_size, args.factor)
    if image.size != (side, side):
        print(f"note: {args.image} is {image.size[0]}x{image.size[1]}; its centre square is restored at {side}x{side} "
              "and pasted back at the input's size", file=sys.stderr)
    run = pipe.restore_run(image, args.task, args.mask, method=args.method, num_samples=args.num_samples,
                           keep_observed=not args.no_keep_observed, factor=args.factor, mode=args.mode, keep=args.keep,
                           kernel_size=args.kernel_size, sigma=args.sigma, sigma_y=args.sigma_y, preset=args.preset,
                           class_label=args.class_label, seed=args.seed, progress=True,
                           **{k: getattr(args, k) for k in GUIDANCE_SETTINGS})
    n = args.num_samples
    save_grid(torch.cat((run.observation, run.images)), args.out, nrow=1 + n)
    print(f"wrote {args.out} (observation | {n} {args.method} restoration(s) at {pipe.image_size} px, "
          f"{run.sec_per_image:.2f} s/image)")
    if args.folder:
        for i, img in enumerate(run.pil):
            path = Path(args.folder) / f"restored_{i:03d}.png"
            with atomic_path(path) as tmp:
                img.save(tmp, format="PNG")
        print(f"wrote {n} PNGs at {run.pil[0].size[0]}x{run.pil[0].size[1]} to {args.folder}")
    return 0
