"""DVC stage ``train_heads``: train the learned sampling heads of the SRDD transformer.

Reads ``params.yaml: train_heads``; trains the heads on ``models/srdd.pt`` (frozen by default,
``freeze_backbone``) and writes ``models/srdd_heads.pt`` (the heads, the hash of the weights
they read and, when fine-tuned, the backbone), ``metrics/train_heads.json`` (test-set losses of
the trained heads beside untrained ones: tau = 1, the configured CFG; the heads' parameter
count and share), ``plots/train_heads.csv`` and ``reports/train_heads/samples.png`` (one row
per class, ``infer_mode: both``); resumes from ``state/train_heads/last.pt``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from scalewise.core.config import from_dict, to_dict
from scalewise.core.digest import weights_hash
from scalewise.core.images import save_grid
from scalewise.core.io import write_json
from scalewise.data.prepare import load_split
from scalewise.models.checkpoints import load_tokenizer, load_transformer, save_heads
from scalewise.project.entry import load_params, run_main, section, stage_parser, tracked, write_curve
from scalewise.sampling.generate import Resample, generate
from scalewise.training.batches import encode_dataset
from scalewise.training.heads import TrainHeadsConfig, evaluate_heads, train_heads

LOSSES = ("loss", "tau", "cfg", "policy", "tau_mean", "cfg_mult_mean", "remask_frac", "rho_mean", "grad_norm", "lr")


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--model", default="models/srdd.pt", help="the SRDD transformer the heads read")
    ap.add_argument("--tokenizer", default="models/tokenizer.pt")
    ap.add_argument("--out", default="models/srdd_heads.pt")
    args = ap.parse_args()

    params = load_params(args.params)
    cfg = from_dict(TrainHeadsConfig, section(params, "train_heads", args.params), f"{args.params}: train_heads")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = load_transformer(args.model, cfg.device)
    tokenizer = load_tokenizer(args.tokenizer, cfg.device)
    train_u8, train_labels, class_names = load_split(args.data, "train")
    test_u8, test_labels, _ = load_split(args.data, "test")
    data_hash = json.loads((Path(args.data) / "manifest.json").read_text())["content_hash"]
    out_metrics, out_plot = "metrics/train_heads.json", "plots/train_heads.csv"

    with tracked("train_heads", params, to_dict(cfg)) as tracker:
        tracker.set_tags({"scalewise.model": "srdd", "scalewise.freeze_backbone": str(cfg.freeze_backbone)})
        backbone_hash = weights_hash(model)
        tokens, x = encode_dataset(tokenizer, train_u8)
        result, heads, used = train_heads(
            cfg, model, tokens, x, train_labels, data_hash, "state/train_heads",
            on_log=lambda step, row: tracker.log_metrics({f"train/{k}": v for k, v in row.items()}, step))
        if result.resumed_from:
            print(f"train_heads: resumed from step {result.resumed_from}, {result.steps_run} training steps run")
        test_tokens, test_x = encode_dataset(tokenizer, test_u8, progress=False)
        metrics = evaluate_heads(heads, used, test_tokens, test_x, test_labels, cfg)
        n_model = sum(p.numel() for p in model.parameters())
        metrics.update({"head_params": heads.num_params(), "head_param_fraction": heads.num_params() / n_model,
                        "freeze_backbone": cfg.freeze_backbone, "steps": cfg.steps,
                        "final_train_loss": result.history[-1]["loss"] if result.history else None})
        save_heads(args.out, heads, backbone_hash, **({} if cfg.freeze_backbone else {"backbone": used.state_dict()}))
        labels = torch.arange(len(class_names)).repeat_interleave(4)
        g = generate(used, tokenizer, labels, cfg=cfg.cfg, cfg_schedule=cfg.cfg_schedule, seed=cfg.seed,
                     resample=Resample(kind="masked", iters=2), infer_mode="both", heads=heads)
        grid = save_grid(g.images, Path("reports/train_heads/samples.png"), nrow=4)
        write_json(out_metrics, metrics)
        write_curve(out_plot, result.history, ["step", *[k for k in LOSSES if result.history and k in result.history[0]]])
        tracker.log_metrics({f"test/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
                            step=cfg.steps)
        tracker.log_artifacts([grid, out_metrics, out_plot])
    print(f"train_heads: test tau loss {metrics['tau']:.4f} (tau=1: {metrics['baseline_tau']:.4f}), CFG loss "
          f"{metrics['cfg']:.4f} (configured: {metrics['baseline_cfg']:.4f}), policy {metrics['policy']:.4f} "
          f"(untrained: {metrics['baseline_policy']:.4f}); {metrics['head_params']} head parameters "
          f"({metrics['head_param_fraction']:.2%} of the transformer)")


if __name__ == "__main__":
    run_main(main)
