"""DVC stage ``train@<model>``: train the next-scale transformer (VAR: causal, SRDD: markov).

Reads ``params.yaml: train.common`` and ``train.<model>``; writes ``models/<model>.pt``,
``reports/train/<model>/samples.png`` (one row per class), ``metrics/train_<model>.json``
and ``plots/train_<model>.csv``; resumes from ``state/train/<model>/last.pt``. A finished
run whose training settings are unchanged is restored, not retrained: changing only what is
rendered (``grid_per_class``, ``grid_cfg``) re-renders the samples and rewrites an identical
model file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from scalewise.models.checkpoints import load_tokenizer, load_transformer, save_model
from scalewise.core.config import ConfigError, from_dict, to_dict
from scalewise.data.prepare import load_split
from scalewise.core.images import save_grid, to_uint8
from scalewise.core.io import write_json
from scalewise.models.official import release_transformer
from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import ScaleTransformer
from scalewise.sampling.generate import generate
from scalewise.training.batches import encode_dataset
from scalewise.training.transformer import (
    TrainConfig, VariantConfig, build_model_config, class_mean_proxy, evaluate_transformer, train_transformer,
)
from scalewise.project.entry import load_params, run_main, section, stage_parser, tracked, write_curve
from scalewise.project.tracking import Tracker


def obtain_model(args: argparse.Namespace, cfg: TrainConfig, variant: VariantConfig, tokenizer: Tokenizer,
                 data: dict, tracker: Tracker) -> tuple[ScaleTransformer, list[dict]]:
    """(the model, its logged curve): the official release imported, or trained (resumably)."""
    model_cfg = build_model_config(cfg.model, variant, tokenizer, len(data["class_names"]))
    name = f"train@{args.model}"
    if variant.official:  # the official release VAR, evaluated on this data instead of trained
        model = release_transformer(variant.official, tokenizer, len(data["class_names"]), model_cfg,
                                    f"{args.params}: train.common.model / train.{args.model}", cfg.device)
        tracker.set_tags({"scalewise.official": variant.official})
        print(f"{name}: imported the official VAR {variant.official} (no training)")
        return model, []
    init_state = load_transformer(variant.init_from).state_dict() if variant.init_from else None
    tokens, x = encode_dataset(tokenizer, data["train_u8"])
    result = train_transformer(
        cfg, model_cfg, tokens, x, data["train_labels"], data["hash"], f"state/train/{args.model}", init_state,
        on_log=lambda step, row: tracker.log_metrics({f"train/{k}": v for k, v in row.items()}, step),
    )
    if result.resumed_from:
        print(f"{name}: resumed from step {result.resumed_from}, {result.steps_run} training steps run")
    return result.model, result.history


def sample_grid(model: ScaleTransformer, tokenizer: Tokenizer, cfg: TrainConfig, data: dict,
                path: Path) -> tuple[Path, dict]:
    """The class-conditional sample grid (one row per class) and what it measures."""
    labels = torch.arange(len(data["class_names"])).repeat_interleave(cfg.grid_per_class)
    t0 = time.perf_counter()
    gen = generate(model, tokenizer, labels, cfg=cfg.grid_cfg, seed=cfg.seed)
    sample_s = time.perf_counter() - t0
    proxy = class_mean_proxy(to_uint8(gen.images), labels, data["train_u8"], data["train_labels"],
                             len(data["class_names"]))
    grid = save_grid(gen.images, path, nrow=cfg.grid_per_class)
    return grid, {"class_mean_proxy": proxy, "grid_images_per_s": labels.numel() / sample_s}


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--model", required=True, help="a key of params.yaml: train (var, srdd, ...): models/<model>.pt")
    ap.add_argument("--tokenizer", default="models/tokenizer.pt")
    args = ap.parse_args()

    params = load_params(args.params)
    sec = section(params, "train", args.params)
    models = sorted(k for k in sec if k != "common")
    if args.model not in models:
        raise ConfigError(f"{args.params}: unknown model {args.model!r} under train:; defined: {models}")
    cfg = from_dict(TrainConfig, sec.get("common", {}), f"{args.params}: train.common")
    variant = from_dict(VariantConfig, sec[args.model], f"{args.params}: train.{args.model}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_metrics, out_plot = f"metrics/train_{args.model}.json", f"plots/train_{args.model}.csv"

    tokenizer = load_tokenizer(args.tokenizer, cfg.device)
    train_u8, train_labels, class_names = load_split(args.data, "train")
    test_u8, test_labels, _ = load_split(args.data, "test")
    data = {"train_u8": train_u8, "train_labels": train_labels, "class_names": class_names,
            "hash": json.loads((Path(args.data) / "manifest.json").read_text())["content_hash"]}

    with tracked(f"train@{args.model}", params, {"common": to_dict(cfg), "variant": to_dict(variant)}) as tracker:
        tracker.set_tags({"scalewise.model": args.model, "scalewise.mask_kind": variant.mask_kind})
        model, history = obtain_model(args, cfg, variant, tokenizer, data, tracker)
        test_tokens, test_x = encode_dataset(tokenizer, test_u8, progress=False)
        metrics = evaluate_transformer(model, test_tokens, test_x, test_labels)
        grid, shown = sample_grid(model, tokenizer, cfg, data, Path(f"reports/train/{args.model}/samples.png"))
        metrics.update({
            "variant": args.model, "mask_kind": variant.mask_kind, "steps": 0 if variant.official else cfg.steps,
            "final_train_loss": history[-1]["loss"] if history else None, "source": variant.official or "trained",
            **shown, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        })
        save_model(f"models/{args.model}.pt", model, class_names=class_names, variant=args.model)
        write_json(out_metrics, metrics)
        per_scale = [f"acc_scale_{k}" for k in range(1, len(model.cfg.patch_nums) + 1)]
        write_curve(out_plot, history, ["step", "loss", "acc", *per_scale, "grad_norm", "lr"])
        tracker.log_metrics({"_headline/test_loss": metrics["test_loss"], "test/loss": metrics["test_loss"],
                             "test/class_mean_proxy": metrics["class_mean_proxy"],
                             **{f"test/acc_scale_{k}": a for k, a in enumerate(metrics["test_acc_by_scale"], 1)}},
                            step=cfg.steps)
        tracker.log_artifacts([grid, out_metrics, out_plot])
        tracker.log_model(f"models/{args.model}.pt", args.tokenizer)  # the report stage registers it
    print(f"train@{args.model}: test loss {metrics['test_loss']:.3f}, class-mean proxy "
          f"{metrics['class_mean_proxy']:.2f}, acc by scale "
          + " ".join(f"{a:.2f}" for a in metrics["test_acc_by_scale"]))


if __name__ == "__main__":
    run_main(main)
