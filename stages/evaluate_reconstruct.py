"""DVC stage ``evaluate_reconstruct``: FID / KID of every restoration method, beside PSNR and SSIM.

Reads ``metrics/reconstruct.json`` (PSNR, SSIM, consistency, s/img per variant x task x
method) and the restored PNGs ``reports/reconstruct/<variant>/<task>/<method>/``, and scores
each method's images with torch-fidelity against the test split (the same extractor and
reference statistics as ``evaluate``). Writes ``metrics/evaluate_reconstruct.json`` shaped
``{variant: {task: {method: {psnr, ssim, consistency, sec_per_image, fid, kid, extractor,
num_images, psnr_se, psnr_se_vs_prior, psnr_se_vs_clamp}}}}``: ``psnr_se`` is the standard error
of the mean PSNR, ``psnr_se_vs_<ref>`` that of the method's PSNR minus ``<ref>``'s on the same
images (paired, from each task's ``per_image.csv``).

    python -m stages.evaluate_reconstruct
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from scalewise.data.prepare import load_split
from scalewise.evaluation.fidelity import fidelity_metrics, resolve_extractor
from scalewise.evaluation.paired import paired_columns, read_per_image
from scalewise.core.io import write_json
from scalewise.project.entry import load_params, run_main, tracked, stage_config, stage_parser
from scalewise.evaluation.plan import EvaluateConfig, reference_key


def load_png_folder(folder: Path) -> torch.Tensor:
    """Every ``*.png`` of ``folder`` (sorted by name) as uint8 (N, C, H, W)."""
    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no PNG images (run `dvc repro reconstruct`)")
    arrays = []
    for p in paths:
        with Image.open(p) as img:
            a = np.asarray(img, dtype=np.uint8)
        arrays.append(a[..., None] if a.ndim == 2 else a)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--reconstruct", default="reports/reconstruct")
    ap.add_argument("--summary", default="metrics/reconstruct.json")
    ap.add_argument("--evaluator", default="models/evaluator.pt")
    ap.add_argument("--cache", default=".cache/fidelity")
    args = ap.parse_args()

    params = load_params(args.params)
    cfg = stage_config(EvaluateConfig, params, "evaluate", args.params)
    summary_path = Path(args.summary)
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path}: no reconstruction summary (run `dvc repro reconstruct_summary`)")
    summary = json.loads(summary_path.read_text())
    extractor = resolve_extractor(args.evaluator, cfg.inception_weights)
    test_u8, _, _ = load_split(args.data, "test")
    ref_key = reference_key(args.data)

    cells = [(v, t, m) for v, tasks in summary.items() for t, methods in tasks.items() for m in methods]
    out: dict = {}
    per_image: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    with tracked("evaluate_reconstruct", params, {"inception_weights": cfg.inception_weights}) as tracker:
        for variant, task, method in tqdm(cells, desc="evaluate_reconstruct"):
            images = load_png_folder(Path(args.reconstruct) / variant / task / method.replace("+", "_"))
            scores = fidelity_metrics(images, test_u8, extractor, kid_subset_size=min(cfg.kid_subset_size,
                                      images.shape[0]), cache_dir=args.cache, reference_key=ref_key,
                                      device=cfg.device)
            row = dict(summary[variant][task][method])
            row.update(fid=scores["fid"], kid=scores["kid"], extractor=scores["extractor"], num_images=images.shape[0])
            if (variant, task) not in per_image:
                per_image[(variant, task)] = read_per_image(Path(args.reconstruct) / variant / task / "per_image.csv")
            row.update(paired_columns(per_image[(variant, task)], method))
            out.setdefault(variant, {}).setdefault(task, {})[method] = row
            tracker.log_metrics({f"{variant}/{task}/{method.replace('+', '_')}/fid": row["fid"]})
        path = write_json("metrics/evaluate_reconstruct.json", out)
        tracker.log_artifact(path)
    print(f"evaluate_reconstruct: FID of {len(cells)} variant x task x method results -> {path}")


if __name__ == "__main__":
    run_main(main)
