"""DVC stage ``train_tokenizer``: train the multi-scale VQ-VAE tokenizer on the prepared data.

Reads ``params.yaml: train_tokenizer``; writes ``models/tokenizer.pt``,
``reports/train_tokenizer/recon_grid.png``, ``metrics/train_tokenizer.json`` (DVC metrics),
``plots/train_tokenizer.csv`` (DVC plot) and resumes from ``state/train_tokenizer/last.pt``
(a finished run with unchanged training settings is restored, not retrained).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from scalewise.core.config import from_dict, to_dict
from scalewise.data.prepare import load_split
from scalewise.core.images import save_grid, to_unit
from scalewise.core.io import write_json
from scalewise.models.checkpoints import save_model
from scalewise.models.official import release_tokenizer
from scalewise.models.tokenizer import Tokenizer
from scalewise.training.tokenizer import TrainTokenizerConfig, evaluate_tokenizer, train_tokenizer
from scalewise.project.entry import load_params, run_main, section, tracked, write_curve
from scalewise.project.tracking import Tracker


def recon_grid(model: Tokenizer, images_u8: torch.Tensor) -> torch.Tensor:
    """Rows: originals, then decodes from the first k = 1..K scales. Returns (N*(K+1), C, H, W)."""
    x = to_unit(images_u8).to(next(model.parameters()).device)
    with torch.no_grad():
        idx_maps = model.encode(x)
        rows = [x] + [model.decode(idx_maps[: k + 1]) for k in range(len(idx_maps))]
    return torch.cat(rows).cpu()


# the files the stage reads and writes, each also a command-line option (--data, --model-out, ...)
PATHS = {"params": "params.yaml", "data": "data/prepared", "model-out": "models/tokenizer.pt",
         "state": "state/train_tokenizer", "reports": "reports/train_tokenizer",
         "metrics": "metrics/train_tokenizer.json", "plot": "plots/train_tokenizer.csv"}
CURVE = ["step", "loss", "recon_mse", "commit_loss", "perplexity", "batch_usage", "lr"]


def obtain_tokenizer(cfg: TrainTokenizerConfig, args: argparse.Namespace, train_u8: torch.Tensor, data_hash: str,
                     tracker: Tracker) -> tuple[Tokenizer, list[dict]]:
    """(the tokenizer, its logged curve): the official release imported, or trained (resumably)."""
    if cfg.official:  # the official release VQVAE, evaluated on this data instead of trained
        model = release_tokenizer(cfg.official, cfg.model, f"{args.params}: train_tokenizer.model", cfg.device)
        tracker.set_tags({"scalewise.official": cfg.official})
        print(f"train_tokenizer: imported the official VQVAE {cfg.official} (no training)")
        return model, []
    result = train_tokenizer(
        cfg, train_u8, data_hash, args.state,
        on_log=lambda step, row: tracker.log_metrics({f"train/{k}": v for k, v in row.items()}, step),
    )
    if result.resumed_from:
        print(f"train_tokenizer: resumed from step {result.resumed_from} ({args.state}/last.pt), "
              f"{result.steps_run} training steps run")
    return result.model, result.history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    for name, default in PATHS.items():
        ap.add_argument(f"--{name}", default=default)
    args = ap.parse_args()

    params = load_params(args.params)
    sec = section(params, "train_tokenizer", args.params)
    train_u8, _, _ = load_split(args.data, "train")
    test_u8, _, _ = load_split(args.data, "test")
    data_hash = json.loads((Path(args.data) / "manifest.json").read_text())["content_hash"]
    sec_model = dict(sec.get("model", {}), in_channels=int(train_u8.shape[1]))
    cfg = from_dict(TrainTokenizerConfig, dict(sec, model=sec_model), f"{args.params}: train_tokenizer")

    with tracked("train_tokenizer", params, to_dict(cfg)) as tracker:
        model, history = obtain_tokenizer(cfg, args, train_u8, data_hash, tracker)
        metrics = evaluate_tokenizer(model, test_u8)
        metrics.update({"steps": 0 if cfg.official else cfg.steps, "num_tokens": cfg.model.num_tokens,
                        "data_hash": data_hash, "source": cfg.official or "trained"})
        save_model(args.model_out, model)
        grid = save_grid(recon_grid(model, test_u8[:8]), Path(args.reports) / "recon_grid.png", nrow=8)
        write_json(args.metrics, metrics)
        write_curve(args.plot, history, CURVE)
        tracker.log_metrics({f"test/{k}": metrics[k] for k in ("psnr", "codebook_usage", "perplexity")},
                            step=cfg.steps)
        tracker.log_series("test/psnr_by_scales", metrics["psnr_by_scales"])
        tracker.log_artifacts([grid, args.metrics, args.plot])
    print(f"train_tokenizer: psnr {metrics['psnr']:.2f} dB, codebook usage "
          f"{100 * metrics['codebook_usage']:.1f}%, by scales "
          + " ".join(f"{v:.1f}" for v in metrics["psnr_by_scales"]))


if __name__ == "__main__":
    run_main(main)
