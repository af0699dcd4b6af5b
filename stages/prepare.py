"""DVC stage ``prepare``: load a source, split it per class, write ``data/prepared``.

Reads ``params.yaml: prepare`` (and ``tracking``); writes train/test tensors, test PNGs,
``manifest.json`` and ``report.json`` (skipped files) atomically.

    python -m stages.prepare [--params params.yaml] [--out data/prepared]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scalewise.core.config import from_dict, to_dict
from scalewise.data.prepare import PrepareConfig, prepare_dataset, save_prepared
from scalewise.project.entry import load_params, run_main, section, tracked


def main() -> None:
    ap = argparse.ArgumentParser(description="Load the prepare.source dataset, split it, write the prepared folder.")
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    ap.add_argument("--out", default="data/prepared", help="output folder (default: data/prepared)")
    args = ap.parse_args()

    params = load_params(args.params)
    cfg = from_dict(PrepareConfig, section(params, "prepare", args.params), f"{args.params}: prepare")
    with tracked("prepare", params, to_dict(cfg)) as tracker:
        data = prepare_dataset(cfg, progress=True)
        out = save_prepared(data, args.out, cfg)
        tracker.log_metrics({"num_train": data.train_labels.numel(), "num_test": data.test_labels.numel(),
                             "num_classes": len(data.class_names), "num_skipped": len(data.skipped)})
        tracker.log_artifact(Path(out) / "manifest.json")
        tracker.log_artifact(Path(out) / "report.json")
    skipped = f", {len(data.skipped)} skipped (see {Path(out) / 'report.json'})" if data.skipped else ""
    print(f"prepare: {cfg.source}: {data.train_labels.numel()} train / {data.test_labels.numel()} test images, "
          f"{len(data.class_names)} classes{skipped} -> {out}")


if __name__ == "__main__":
    run_main(main)
