"""DVC stage ``train@<variant>``: train the next-scale transformer (VAR: causal, SRDD: markov).

Reads ``params.yaml: train.common`` and ``train.<variant>``; writes ``models/<variant>.pt``,
``reports/train/<variant>/samples.png`` (one row per class), ``metrics/train_<variant>.json``
and ``plots/train_<variant>.csv``; resumes from ``state/train/<variant>/last.pt``.
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
from scalewise.sampling.generate import generate
from scalewise.training.transformer import (
    TrainConfig, VariantConfig, build_model_config, class_mean_proxy, encode_dataset,
    evaluate_transformer, train_transformer,
)
from scalewise.project.stage import load_params, run_main, section, tracked, write_curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", required=True, help="a key of params.yaml: train (var, srdd, ...)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--tokenizer", default="models/tokenizer.pt")
    args = ap.parse_args()

    params = load_params(args.params)
    sec = section(params, "train", args.params)
    variants = sorted(k for k in sec if k != "common")
    if args.variant not in variants:
        raise ConfigError(f"{args.params}: unknown variant {args.variant!r} under train:; defined: {variants}")
    cfg = from_dict(TrainConfig, sec.get("common", {}), f"{args.params}: train.common")
    variant = from_dict(VariantConfig, sec[args.variant], f"{args.params}: train.{args.variant}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_model = Path(f"models/{args.variant}.pt")
    reports = Path(f"reports/train/{args.variant}")

    tokenizer = load_tokenizer(args.tokenizer, cfg.device)
    train_u8, train_labels, class_names = load_split(args.data, "train")
    test_u8, test_labels, _ = load_split(args.data, "test")
    data_hash = json.loads((Path(args.data) / "manifest.json").read_text())["content_hash"]
    model_cfg = build_model_config(cfg.model, variant, tokenizer, len(class_names))
    init_state = load_transformer(variant.init_from).state_dict() if variant.init_from else None

    with tracked(f"train@{args.variant}", params, {"common": to_dict(cfg), "variant": to_dict(variant)}) as tracker:
        tracker.set_tags({"scalewise.variant": args.variant, "scalewise.mask_kind": variant.mask_kind})
        if variant.official:  # the official release VAR, evaluated on this data instead of trained
            model = release_transformer(variant.official, tokenizer, len(class_names), model_cfg,
                                        f"{args.params}: train.common.model / train.{args.variant}", cfg.device)
            model_cfg, history = model.cfg, []
            tracker.set_tags({"scalewise.official": variant.official})
            print(f"train@{args.variant}: imported the official VAR {variant.official} (no training)")
        else:
            tokens, x = encode_dataset(tokenizer, train_u8)
            result = train_transformer(
                cfg, model_cfg, tokens, x, train_labels, data_hash, f"state/train/{args.variant}", init_state,
                on_log=lambda step, row: tracker.log_metrics({f"train/{k}": v for k, v in row.items()}, step),
            )
            if result.resumed_from:
                print(f"train@{args.variant}: resumed from step {result.resumed_from}")
            model, history = result.model, result.history
        test_tokens, test_x = encode_dataset(tokenizer, test_u8, progress=False)
        metrics = evaluate_transformer(model, test_tokens, test_x, test_labels)

        labels = torch.arange(len(class_names)).repeat_interleave(cfg.grid_per_class)
        t0 = time.perf_counter()
        gen = generate(model, tokenizer, labels, cfg=cfg.grid_cfg, seed=cfg.seed)
        sample_s = time.perf_counter() - t0
        grid = save_grid(gen.images, reports / "samples.png", nrow=cfg.grid_per_class)
        metrics.update({
            "variant": args.variant, "mask_kind": variant.mask_kind, "steps": 0 if variant.official else cfg.steps,
            "final_train_loss": history[-1]["loss"] if history else None, "source": variant.official or "trained",
            "class_mean_proxy": class_mean_proxy(to_uint8(gen.images), labels, train_u8, train_labels,
                                                 len(class_names)),
            "grid_images_per_s": labels.numel() / sample_s,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        })
        save_model(out_model, model, class_names=class_names, variant=args.variant)
        write_json(f"metrics/train_{args.variant}.json", metrics)
        per_scale = [f"acc_scale_{k}" for k in range(1, len(model_cfg.patch_nums) + 1)]
        write_curve(f"plots/train_{args.variant}.csv", history,
                    ["step", "loss", "acc", *per_scale, "grad_norm", "lr"])
        tracker.log_metrics({"test/loss": metrics["test_loss"], "test/class_mean_proxy": metrics["class_mean_proxy"]},
                            step=cfg.steps)
        for k, v in enumerate(metrics["test_acc_by_scale"], start=1):
            tracker.log_metrics({"test/acc_by_scale": v}, step=k)
        for path in (grid, f"metrics/train_{args.variant}.json", f"plots/train_{args.variant}.csv"):
            tracker.log_artifact(path)
    print(f"train@{args.variant}: test loss {metrics['test_loss']:.3f}, class-mean proxy "
          f"{metrics['class_mean_proxy']:.2f}, acc by scale "
          + " ".join(f"{a:.2f}" for a in metrics["test_acc_by_scale"]))


if __name__ == "__main__":
    run_main(main)
