"""DVC stage ``prepare``: load a source, split it, write ``data/prepared``.

Reads ``params.yaml: prepare``; writes train/test tensors, test PNGs, ``manifest.json``
and ``report.json`` (skipped files) atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scalewise.config import from_dict, to_dict
from scalewise.data import PrepareConfig, prepare_dataset, save_prepared
from stages._common import load_params, run_main, section, tracked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/prepared")
    args = ap.parse_args()

    params = load_params(args.params)
    cfg = from_dict(PrepareConfig, section(params, "prepare", args.params), f"{args.params}: prepare")
    with tracked("prepare", params, to_dict(cfg)) as tracker:
        data = prepare_dataset(cfg)
        out = save_prepared(data, args.out, cfg)
        tracker.log_metrics({"num_train": data.train_labels.numel(), "num_test": data.test_labels.numel(),
                             "num_classes": len(data.class_names), "num_skipped": len(data.skipped)})
        tracker.log_artifact(Path(out) / "manifest.json")
        tracker.log_artifact(Path(out) / "report.json")
    print(f"prepare: {cfg.source}: {data.train_labels.numel()} train / {data.test_labels.numel()} test images, "
          f"{len(data.class_names)} classes, {len(data.skipped)} skipped -> {out}")


if __name__ == "__main__":
    run_main(main)
