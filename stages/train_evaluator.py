"""DVC stage ``train_evaluator``: train the domain classifier whose features the generation
metrics (FID / IS / KID / precision / recall) are measured in.

Reads ``params.yaml: train_evaluator``; writes ``models/evaluator.pt`` and
``metrics/train_evaluator.json`` (test_acc, train_acc, steps, seconds).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from scalewise.core.config import to_dict
from scalewise.data.prepare import load_split
from scalewise.models.evaluator import save_evaluator
from scalewise.training.evaluator import EvaluatorConfig, train_evaluator
from scalewise.core.io import write_json
from scalewise.project.entry import load_params, run_main, stage_config, stage_parser, tracked

OUT_MODEL = "models/evaluator.pt"
OUT_METRICS = "metrics/train_evaluator.json"


def main() -> None:
    args = stage_parser(__doc__).parse_args()

    params = load_params(args.params)
    cfg = stage_config(EvaluatorConfig, params, "train_evaluator", args.params)
    train_u8, train_labels, class_names = load_split(args.data, "train")
    test_u8, test_labels, _ = load_split(args.data, "test")
    data_hash = json.loads((Path(args.data) / "manifest.json").read_text())["content_hash"]

    with tracked("train_evaluator", params, to_dict(cfg)) as tracker:
        t0 = time.perf_counter()
        model, result = train_evaluator(cfg, train_u8, train_labels, test_u8, test_labels,
                                        num_classes=len(class_names))
        seconds = time.perf_counter() - t0
        metrics = {"test_acc": result["test_acc"], "train_acc": result["train_acc"],
                   "test_loss": result["test_loss"], "steps": result["steps"], "params": result["params"],
                   "seconds": seconds, "threads": torch.get_num_threads()}
        save_evaluator(OUT_MODEL, model, class_names=class_names, data_hash=data_hash,
                       test_acc=result["test_acc"])
        write_json(OUT_METRICS, metrics)
        tracker.log_metrics({"test/acc": metrics["test_acc"], "test/loss": metrics["test_loss"],
                             "train/acc": metrics["train_acc"], "seconds": seconds}, step=cfg.steps)
        tracker.log_artifact(OUT_METRICS)
    print(f"train_evaluator: test acc {metrics['test_acc']:.4f}, train acc {metrics['train_acc']:.4f}, "
          f"{cfg.steps} steps in {seconds:.1f} s -> {OUT_MODEL}")


if __name__ == "__main__":
    run_main(main)
