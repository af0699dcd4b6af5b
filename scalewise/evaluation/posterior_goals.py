"""Tables T4c and T4d: the posterior sampler against its goals, and SRDD against VAR.

Pure functions of the pipeline's metrics (``metrics/evaluate_reconstruct.json`` for T4's
images, ``metrics/posterior_frontier.json`` for T4b's, ``metrics/restore_cost.json`` for the
costs, timed side by side):

- ``T4c``, per task and model: the margin of ``guided`` over the better of ``prior`` and
  ``clamp`` (goal >= 1 dB); its FID against ``clamp``'s and ``classical``'s (goal: lower than
  both); its consistency as a multiple of the ``oracle``'s (goal <= 1.25x); the margin of
  ``guided_mean`` over ``classical`` (goal >= 0 dB); the default's cost as a multiple of the
  prior's (goal <= 20x) and the ``fast`` preset's (goal <= 4x), both from the ``restore_cost``
  stage (each task's first batch, methods interleaved, medians of repeated runs); and the
  ``fast`` preset's margin over ``clamp`` (goal > 0 dB) on the frontier's images. Each margin
  comes with its paired standard error over the same images (``psnr_se_vs_*``); a goal is
  judged on the mean. ``unmet`` lists the goals a row misses.
- ``T4d``, per task: measurement-aware masked resampling on SRDD against VAR's default guided
  sampling (and against VAR with the same resampling), on the frontier's images; the costs from
  ``restore_cost``.
"""

from __future__ import annotations

from typing import Any

from scalewise.evaluation.tables import MissingResult, Table

FRONTIER = "metrics/posterior_frontier.json"
RECON = "metrics/evaluate_reconstruct.json"
COST = "metrics/restore_cost.json"
GOALS = {  # name -> the test on one T4c row's values (see the module docstring)
    "+1 dB": lambda r: r["margin"] >= 1.0,
    "FID": lambda r: r["fid"] < min(r["fid_clamp"], r["fid_classical"]),
    "fit y": lambda r: r["fit"] <= 1.25,
    "MMSE": lambda r: r["mean_margin"] >= 0.0,
    "20x": lambda r: r["cost"] <= 20.0,
    "fast 4x": lambda r: r["fast_cost"] <= 4.0,
    "fast > clamp": lambda r: r["fast_margin"] > 0.0,
}


def _get(source: dict, name: str, *keys: str) -> Any:
    node = source
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            stage = {FRONTIER: "posterior_frontier", RECON: "evaluate_reconstruct",
                     COST: "paper/dvc.yaml:restore_cost"}[name]
            raise MissingResult(f"{name}: no result at {'/'.join(keys)} (run `dvc repro {stage}`; T4c and T4d need "
                                f"the methods prior, clamp, classical, guided, guided_mean, oracle, the frontier "
                                f"points default, fast, masked_resampling, clamp and the restore_cost variants "
                                f"default, fast and masked_resampling)")
        node = node[k]
    return node


def goal_rows(recon: dict, frontier: dict, cost: dict) -> list[dict[str, Any]]:
    """One record per (task, model) with the values T4c shows and ``unmet``, the goals missed."""
    rows = []
    for task in sorted({t for v in recon.values() for t in v}):
        for model in sorted(recon):
            methods = recon[model].get(task)
            if not methods:
                continue
            m = {k: _get(recon, RECON, model, task, k) for k in ("prior", "clamp", "classical", "guided",
                                                                   "guided_mean", "oracle")}
            fast = _get(frontier, FRONTIER, model, task, "fast")
            timed = {v: _get(cost, COST, "results", model, task, v, "ratio_to_prior", "guided") for v in ("default", "fast")}
            clamp_32 = _get(frontier, FRONTIER, model, task, "clamp")
            ref = max(("prior", "clamp"), key=lambda k: m[k]["psnr"])  # the stronger baseline
            r = {"task": task, "model": model,
                 "margin": m["guided"]["psnr"] - m[ref]["psnr"],
                 "margin_se": _get(recon, RECON, model, task, "guided", f"psnr_se_vs_{ref}"),
                 "fid": m["guided"]["fid"], "fid_clamp": m["clamp"]["fid"], "fid_classical": m["classical"]["fid"],
                 "fit": m["guided"]["consistency"] / max(m["oracle"]["consistency"], 1e-12),
                 "mean_margin": m["guided_mean"]["psnr"] - m["classical"]["psnr"],
                 "cost": timed["default"], "fast_cost": timed["fast"], "fast_margin": fast["psnr"] - clamp_32["psnr"],
                 "fast_margin_se": _get(frontier, FRONTIER, model, task, "fast", "psnr_se_vs_clamp")}
            r["unmet"] = [g for g, ok in GOALS.items() if not ok(r)]
            rows.append(r)
    return rows


def t4c_goals(recon: dict, frontier: dict | None, cost: dict | None = None) -> Table:
    """T4c: every acceptance goal of the posterior sampler, per task and model."""
    t = Table("T4c", "Posterior sampling against its goals",
              ["task", "model", "guided - max(prior, clamp) (dB)", "SE (dB)", "FID guided", "FID clamp",
               "FID classical", "consistency / oracle", "guided_mean - classical (dB)", "default x prior",
               "fast x prior", "fast - clamp (dB)", "SE (dB)", "unmet"])
    if not recon:
        raise MissingResult(f"{RECON} is empty (run `dvc repro evaluate_reconstruct`)")
    if not frontier:
        raise MissingResult(f"{FRONTIER} is missing or empty (run `dvc repro posterior_frontier`)")
    if not cost:
        raise MissingResult(f"{COST} is missing or empty (run `dvc repro paper/dvc.yaml:restore_cost`)")
    for r in goal_rows(recon, frontier, cost):
        t.rows.append([r["task"], r["model"], r["margin"], r["margin_se"], r["fid"], r["fid_clamp"], r["fid_classical"],
                       r["fit"], r["mean_margin"], r["cost"], r["fast_cost"], r["fast_margin"], r["fast_margin_se"],
                       ", ".join(r["unmet"]) or "none"])
    t.notes.append("goals: guided >= max(prior, clamp) + 1 dB; FID below clamp's and classical's; consistency "
                   "<= 1.25x the oracle's; guided_mean >= classical; default <= 20x prior; fast <= 4x prior and "
                   "above clamp (fast and its clamp reference on T4b's images, the rest on T4's); SE: the paired "
                   "standard error of the margin to its left over the same images (a goal is judged on the mean)")
    t.notes.append(_cost_note(cost))
    return t


def _cost_note(cost: dict) -> str:
    machine = cost.get("machine") or {}
    return (f"cost: guided / prior seconds per image on each task's first batch, the methods interleaved, medians "
            f"of repeated runs after a warm-up (stage restore_cost), on {machine.get('cpu', '?')} "
            f"(flags {' '.join(machine.get('cpu_flags', [])) or 'none'}), {machine.get('threads', '?')} threads")


def t4d_srdd_vs_var(frontier: dict | None, cost: dict | None = None, resampling: str = "masked_resampling",
                    default: str = "default") -> Table:
    """T4d: SRDD with measurement-aware masked resampling against VAR guided, task by task."""
    t = Table("T4d", "SRDD with measurement-aware resampling vs VAR guided",
              ["task", "VAR guided (dB)", "VAR + resampling (dB)", "SRDD guided (dB)", "SRDD + resampling (dB)",
               "SRDD + resampling - VAR guided (dB)", "SRDD + resampling - VAR + resampling (dB)",
               "SRDD + resampling x prior", "VAR guided x prior"])
    if not frontier:
        raise MissingResult(f"{FRONTIER} is missing or empty (run `dvc repro posterior_frontier`)")
    if not cost:
        raise MissingResult(f"{COST} is missing or empty (run `dvc repro paper/dvc.yaml:restore_cost`)")
    for task in sorted({t for v in frontier.values() for t in v}):
        p = {(model, point): _get(frontier, FRONTIER, model, task, point)
             for model in ("var", "srdd") for point in (default, resampling)}
        sr, vg = p[("srdd", resampling)], p[("var", default)]
        t.rows.append([task, vg["psnr"], p[("var", resampling)]["psnr"], p[("srdd", default)]["psnr"], sr["psnr"],
                       sr["psnr"] - vg["psnr"], sr["psnr"] - p[("var", resampling)]["psnr"],
                       _get(cost, COST, "results", "srdd", task, resampling, "ratio_to_prior", "guided"),
                       _get(cost, COST, "results", "var", task, default, "ratio_to_prior", "guided")])
    t.notes.append(f"points {default!r} and {resampling!r} of T4b (the same images for both models); the costs are "
                   f"restore_cost's variants of the same names")
    t.notes.append(_cost_note(cost))
    return t
