"""The headline numbers of a pipeline run: what ``dvc metrics show`` lists and the MLflow parent
run carries. The rich records (every setting, sweep and method) stay in the JSON files the
tables read; these are the few a person compares first.
"""

from __future__ import annotations

from typing import Any

GENERATION_KEYS = ("fid", "isc", "precision", "recall", "images_per_s")  # of each model's default setting
RESTORATION_METHOD = "guided"  # the posterior sampler's PSNR per task


def headline(evaluate: dict[str, dict[str, dict[str, Any]]],
             reconstruct: dict[str, dict[str, dict[str, dict[str, Any]]]] | None = None) -> dict[str, dict[str, Any]]:
    """``{model: {fid, isc, precision, recall, images_per_s, guided_psnr: {task: dB}}}``.

    Args:
        evaluate: ``{model: {setting: metrics}}`` (``metrics/evaluate.json``); each model's
            ``default`` setting gives its generation numbers (FID, IS, precision, recall, img/s).
        reconstruct: ``{model: {task: {method: metrics}}}`` (``metrics/evaluate_reconstruct.json``);
            the guided PSNR (dB) of every task a model restored.
    Values are rounded to 4 significant digits (what a table shows; DVC diffs stay readable).
    """
    out: dict[str, dict[str, Any]] = {}
    for model, settings in evaluate.items():
        if "default" not in settings:
            raise KeyError(f"evaluate: model {model!r} has no 'default' setting")
        out[model] = {k: _round(settings["default"][k]) for k in GENERATION_KEYS}
    for model, tasks in (reconstruct or {}).items():
        psnr = {task: _round(methods[RESTORATION_METHOD]["psnr"]) for task, methods in sorted(tasks.items())
                if RESTORATION_METHOD in methods}
        if psnr:
            out.setdefault(model, {})["guided_psnr"] = psnr
    return out


def _round(value: Any) -> float:
    return float(f"{float(value):.4g}")
