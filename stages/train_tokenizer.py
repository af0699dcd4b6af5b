"""DVC stage ``train_tokenizer``: train the multi-scale VQ-VAE tokenizer on the prepared data.

Reads ``params.yaml: train_tokenizer``; writes ``models/tokenizer.pt``,
``reports/train_tokenizer/recon_grid.png``, ``metrics/train_tokenizer.json`` (DVC metrics),
``plots/train_tokenizer.csv`` (DVC plot) and resumes from ``state/train_tokenizer/last.pt``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from scalewise.core.config import from_dict, to_dict
from scalewise.data.prepare import load_split
from scalewise.core.images import save_grid
from scalewise.core.io import write_json
from scalewise.models.checkpoints import save_model
from scalewise.models.official import release_tokenizer
from scalewise.training.tokenizer import TrainTokenizerConfig, evaluate_tokenizer, to_unit, train_tokenizer
from scalewise.project.stage import load_params, run_main, section, tracked, write_curve


def recon_grid(model, images_u8: torch.Tensor) -> torch.Tensor:
    """Rows: originals, then decodes from the first k = 1..K scales. Returns (N*(K+1), C, H, W)."""
    x = to_unit(images_u8).to(next(model.parameters()).device)
    with torch.no_grad():
        idx_maps = model.encode(x)
        rows = [x] + [model.decode(idx_maps[: k + 1]) for k in range(len(idx_maps))]
    return torch.cat(rows).cpu()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--model-out", default="models/tokenizer.pt")
    ap.add_argument("--state", default="state/train_tokenizer")
    ap.add_argument("--reports", default="reports/train_tokenizer")
    ap.add_argument("--metrics", default="metrics/train_tokenizer.json")
    ap.add_argument("--plot", default="plots/train_tokenizer.csv")
    args = ap.parse_args()

    params = load_params(args.params)
    sec = section(params, "train_tokenizer", args.params)
    train_u8, _, _ = load_split(args.data, "train")
    test_u8, _, _ = load_split(args.data, "test")
    manifest = json.loads((Path(args.data) / "manifest.json").read_text())
    sec_model = dict(sec.get("model", {}), in_channels=int(train_u8.shape[1]))
    cfg = from_dict(TrainTokenizerConfig, dict(sec, model=sec_model), f"{args.params}: train_tokenizer")

    with tracked("train_tokenizer", params, to_dict(cfg)) as tracker:
        if cfg.official:  # the official release VQVAE, evaluated on this data instead of trained
            model = release_tokenizer(cfg.official, cfg.model, f"{args.params}: train_tokenizer.model", cfg.device)
            history: list[dict] = []
            tracker.set_tags({"scalewise.official": cfg.official})
            print(f"train_tokenizer: imported the official VQVAE {cfg.official} (no training)")
        else:
            result = train_tokenizer(
                cfg, train_u8, manifest["content_hash"], args.state,
                on_log=lambda step, row: tracker.log_metrics({f"train/{k}": v for k, v in row.items()}, step),
            )
            if result.resumed_from:
                print(f"train_tokenizer: resumed from step {result.resumed_from} ({args.state}/last.pt)")
            model, history = result.model, result.history
        metrics = evaluate_tokenizer(model, test_u8)
        metrics.update({"steps": 0 if cfg.official else cfg.steps, "num_tokens": cfg.model.num_tokens,
                        "data_hash": manifest["content_hash"], "source": cfg.official or "trained"})

        save_model(args.model_out, model)
        grid = save_grid(recon_grid(model, test_u8[:8]), Path(args.reports) / "recon_grid.png", nrow=8)
        write_json(args.metrics, metrics)
        write_curve(args.plot, history,
                    ["step", "loss", "recon_mse", "commit_loss", "perplexity", "batch_usage", "lr"])

        tracker.log_metrics({"test/psnr": metrics["psnr"], "test/codebook_usage": metrics["codebook_usage"],
                             "test/perplexity": metrics["perplexity"]}, step=cfg.steps)
        for k, value in enumerate(metrics["psnr_by_scales"], start=1):
            tracker.log_metrics({"test/psnr_by_scales": value}, step=k)
        for path in (grid, args.metrics, args.plot):
            tracker.log_artifact(path)
    print(f"train_tokenizer: psnr {metrics['psnr']:.2f} dB, codebook usage "
          f"{100 * metrics['codebook_usage']:.1f}%, by scales "
          + " ".join(f"{v:.1f}" for v in metrics["psnr_by_scales"]))


if __name__ == "__main__":
    run_main(main)
