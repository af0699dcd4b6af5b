"""The paper tables: built from metrics dicts, rendered as Markdown / CSV / LaTeX, clear errors."""

from __future__ import annotations

import csv
import io

import pytest

from scalewise.evaluation.paper_tables import (
    ALL_TABLES, STUDY_TABLES, TABLES, MissingResult, build_tables, check_names, select_markdown, to_csv, to_latex, to_markdown,
)


def _result(fid: float, cfg: float = 1.5, kind: str = "none", steps: int = 7) -> dict:
    return {"fid": fid, "isc": 2.0, "kid": 0.01, "precision": 0.8, "recall": 0.7, "images_per_s": 100.0 / steps,
            "peak_memory_bytes": 3 * 2**20, "cache_bytes": 0 if kind else 1, "steps": steps, "extractor": "x",
            "setting": {"cfg": cfg, "resample_kind": kind}}


def _evaluate() -> dict:
    srdd = {"default": _result(10.0), "simple": _result(9.0, kind="simple"), "masked": _result(8.0, kind="masked"),
            "masked_tuned_cfg": _result(7.0, cfg=2.0, kind="masked")}
    srdd.update({f"cfg{c:g}": _result(10 - c, cfg=c, kind="masked") for c in (0.0, 1.0, 2.0)})
    srdd.update({f"masked_t{t:g}_n{n}": _result(8 + t - n / 10, kind="masked") for t in (0.05, 0.1) for n in (1, 2)})
    srdd.update({"policy": _result(7.5, kind="masked", steps=15), "guidance": _result(9.5),
                 "both": _result(7.2, kind="masked", steps=16)})
    return {"var": {"default": _result(11.0), "cfg5": _result(20.0, cfg=5.0, kind="masked")}, "srdd": srdd, "srdd_distilled": {"default": _result(12.0, steps=5)}}


def _method(psnr: float, fid: float, consistency: float, sec: float) -> dict:
    return {"psnr": psnr, "ssim": 0.5, "consistency": consistency, "sec_per_image": sec, "fid": fid,
            "psnr_se_vs_prior": 0.3, "psnr_se_vs_clamp": 0.2}


# method -> (PSNR, FID, consistency, s/img); srdd's guided misses "+1 dB" and "FID", var's meets every T4 goal
_RECON_METHODS = {"prior": (10.0, 30.0, 9.0, 0.01), "classical": (15.0, 40.0, 0.5, 0.001),
                  "clamp": (14.0, 20.0, 5.0, 0.012), "guided_mean": (17.0, 6.0, 1.1, 0.15),
                  "oracle": (27.0, 2.0, 1.0, 0.001)}
RECON = {v: {"sr_x4": {**{m: _method(*vals) for m, vals in _RECON_METHODS.items()},
                       "guided": _method(*((16.0, 5.0, 1.2, 0.15) if v == "var" else (14.5, 25.0, 1.2, 0.15)))}}
         for v in ("var", "srdd")}


def _point(particles: int, steps: int, psnr: float, sec: float) -> dict:
    return {"particles": particles, "steps": steps, "psnr": psnr, "ssim": 0.5, "consistency": 0.2,
            "sec_per_image": sec, "ratio_to_prior": sec / 0.01, "psnr_se_vs_clamp": 0.25}


FRONTIER = {v: {task: {"p4_s2": _point(4, 2, 16.0, 0.08), "p1_s1": _point(1, 1, 14.0, 0.01),
                       "p2_s1": _point(2, 1, 15.0, 0.02), "default": _point(1, 10, 16.5, 0.1),
                       "fast": _point(1, 1, 15.0 if v == "var" else 13.0, 0.03),
                       "masked_resampling": _point(1, 10, 17.5 if v == "srdd" else 17.0, 0.2),
                       "clamp": _point(1, 0, 14.0, 0.012)}
                for task in ("sr_x4", "deblur")} for v in ("var", "srdd")}
# restore_cost: guided / prior timed side by side; srdd's default misses "20x" (T4's own stage timings say 15x)
COST = {"machine": {"cpu": "test cpu", "cpu_flags": ["avx2"], "threads": 2, "device": "cpu"},
        "results": {v: {task: {"default": {"ratio_to_prior": {"prior": 1.0, "guided": 15.0 if v == "var" else 25.0}},
                                  "fast": {"ratio_to_prior": {"prior": 1.0, "guided": 3.0}},
                                  "masked_resampling": {"ratio_to_prior": {"prior": 1.0, "guided": 40.0 if v == "srdd" else 38.0}}}
                        for task in ("sr_x4", "deblur")} for v in ("var", "srdd")}}
CONTEXT = {"dataset": "digits", "git commit": "abc123"}
_REC = {"recall": 0.5, "precision": 0.7, "images_per_s": 10.0}
DISTILL_FRONTIER = {"teacher": {"patch_nums": [1, 2, 3], "fid": 2.0, **_REC},
                    "students": {"drop2": {"drop": [2, 3], "patch_nums": [1, 4], "fid": 2.3, "speedup": 1.5, **_REC},
                                 "drop1": {"drop": [2], "patch_nums": [1, 3, 4], "fid": 2.05, "speedup": 1.1, **_REC}},
                    "chosen": "drop2", "why": "the lowest-FID student at least 1.3x faster"}
HEADS = {"head_params": 1234, "head_param_fraction": 0.012, "freeze_backbone": True, "tau": 1.1, "baseline_tau": 1.2,
         "cfg": 1.3, "baseline_cfg": 1.4, "policy": 0.5, "baseline_policy": 0.7, "tau_mean": 0.9,
         "cfg_mult_mean": 1.1, "remask_frac": 0.1}


def test_every_table_has_its_rows_and_states_its_context():
    tables = build_tables([*TABLES, *STUDY_TABLES], _evaluate(), RECON, CONTEXT, frontier=FRONTIER, heads=HEADS,
                          distill_frontier=DISTILL_FRONTIER, cost=COST)
    by = {t.key: t for t in tables}
    assert [t.key for t in tables] == ["T1", "T2", "T3", "T4", "T5", "T7", "T4b", "T4c", "T4d", "T8"]
    assert [r[0] for r in by["T8"].rows] == ["teacher", "drop1", "drop2"] and by["T8"].rows[2][-1] == "yes"
    assert [r[1] for r in by["T7"].rows] == ["default", "masked", "policy", "guidance", "both"]
    assert [r[-1] for r in by["T7"].rows] == [0, 0, 1234, 1234, 1234] and by["T7"].rows[4][2] == 7.2
    assert any("tau NLL 1.1000 vs 1.2000" in n for n in by["T7"].notes)
    assert [r[0] for r in by["T1"].rows] == ["VAR", "SRDD", "SRDD + simple resampling", "SRDD + masked resampling",
                                               "SRDD + MR + tuned CFG", "SRDD distilled"]
    assert by["T1"].rows[4][2] == "masked, cfg=2" and by["T1"].rows[5][8] == 5  # tuned CFG shown; distilled steps
    assert [(r[0], r[1]) for r in by["T2"].rows] == [(0.05, 1), (0.05, 2), (0.1, 1), (0.1, 2)]
    assert [r[:2] for r in by["T3"].rows] == [["srdd", 0.0], ["srdd", 1.0], ["srdd", 2.0], ["var", 5.0]]
    assert by["T3"].rows[2][3] == 8.0
    assert len(by["T4"].rows) == 12 and {r[2] for r in by["T4"].rows} == {"var", "srdd"}
    assert len(by["T4b"].rows) == 28
    deblur_srdd = [r for r in by["T4b"].rows if r[:2] == ["deblur", "srdd"]]
    assert ["deblur", "srdd", "p1_s1", 1, 1, 0, 14.0, 14.0, 0.2, 0.01, 1.0] in deblur_srdd
    grid = [r[3:5] for r in deblur_srdd if r[2].startswith("p")]
    assert grid == [[1, 1], [2, 1], [4, 2]]  # by cost within (task, model)
    assert by["T5"].rows[2][3] == pytest.approx((100 / 5) / (100 / 7))  # distilled speed-up vs VAR
    for t in tables:
        assert "dataset: digits" in t.notes and "git commit: abc123" in t.notes
        assert all(len(r) == len(t.columns) for r in t.rows)


def test_t4c_checks_every_goal_and_names_the_unmet_ones():
    (t4c, t4d) = build_tables(["T4c", "T4d"], _evaluate(), RECON, CONTEXT, frontier=FRONTIER, cost=COST)
    rows = {r[1]: r for r in t4c.rows}
    var, srdd = rows["var"], rows["srdd"]
    assert var[2] == pytest.approx(2.0) and var[7] == pytest.approx(1.2) and var[8] == pytest.approx(2.0)
    assert var[9] == pytest.approx(15.0) and var[10] == pytest.approx(3.0) and var[11] == pytest.approx(1.0)
    assert var[3] == 0.2 and var[12] == 0.25  # the paired SE against clamp, the stronger baseline; fast's on T4b
    assert var[13] == "none"
    assert srdd[2] == pytest.approx(0.5) and srdd[11] == pytest.approx(-1.0)
    assert srdd[9] == pytest.approx(25.0)  # the side-by-side timing, not T4's stage times (15x)
    assert srdd[13] == "+1 dB, FID, 20x, fast > clamp"
    assert any("test cpu (flags avx2), 2 threads" in n for n in t4c.notes)
    (sr,) = [r for r in t4d.rows if r[0] == "sr_x4"]
    assert sr[1:5] == [16.5, 17.0, 16.5, 17.5] and sr[5] == pytest.approx(1.0) and sr[6] == pytest.approx(0.5)
    assert sr[7:9] == [40.0, 15.0]  # restore_cost's masked_resampling (srdd) and default (var), not the frontier's
    broken = {v: {t: {p: r for p, r in pts.items() if p != "fast"} for t, pts in ts.items()} for v, ts in FRONTIER.items()}
    with pytest.raises(MissingResult, match=r"posterior_frontier\.json: no result at srdd/sr_x4/fast \(run `dvc repro posterior_frontier`"):
        build_tables(["T4c"], _evaluate(), RECON, CONTEXT, frontier=broken, cost=COST)
    with pytest.raises(MissingResult, match=r"restore_cost\.json is missing or empty \(run `dvc repro paper/dvc.yaml:restore_cost`"):
        build_tables(["T4c"], _evaluate(), RECON, CONTEXT, frontier=FRONTIER)
    no_fast = {"machine": {}, "results": {v: {"sr_x4": {"default": c["sr_x4"]["default"]}} for v, c in COST["results"].items()}}
    with pytest.raises(MissingResult, match=r"restore_cost\.json: no result at results/srdd/sr_x4/fast"):
        build_tables(["T4c"], _evaluate(), RECON, CONTEXT, frontier=FRONTIER, cost=no_fast)


def test_renderings_hold_the_same_numbers():
    tables = build_tables(["T1", "T5"], _evaluate(), RECON, CONTEXT)
    md = to_markdown(tables)
    assert "## T1: Generation" in md and "| SRDD + MR + tuned CFG | srdd | masked, cfg=2 | 7 |" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(tables))))
    assert {"table": "T1", "row": "5", "column": "FID", "value": "12.0"} in rows
    tex = to_latex(tables)
    assert tex.count("\\begin{tabular}") == 2 and "SRDD + MR + tuned CFG & srdd & masked, cfg=2 & 7" in tex
    assert "\\_" in tex  # srdd_distilled escaped
    assert select_markdown(md, ["t5"]).count("## T") == 1 and "## T5" in select_markdown(md, ["T5"])


def test_unknown_table_names_and_missing_results_are_named():
    with pytest.raises(ValueError, match=r"unknown table name\(s\) \['T4B'\]"):
        check_names(["T1", "T4b"])  # a study: not among the main tables of the report stage
    evaluate = _evaluate()
    del evaluate["srdd"]["masked"]
    with pytest.raises(MissingResult, match="no setting 'masked'.*evaluate.settings"):
        build_tables(["T1"], evaluate, RECON, CONTEXT)
    with pytest.raises(MissingResult, match="no model 'srdd_distilled'"):
        build_tables(["T5"], {k: v for k, v in _evaluate().items() if k != "srdd_distilled"}, RECON, CONTEXT)
    with pytest.raises(MissingResult, match="no CFG sweep"):
        build_tables(["T3"], {"srdd": {"default": _result(1.0)}}, RECON, CONTEXT)
    with pytest.raises(MissingResult, match=r"metrics/posterior_frontier\.json.*dvc repro posterior_frontier"):
        build_tables(["T4b"], _evaluate(), RECON, CONTEXT)
    with pytest.raises(MissingResult, match=r"metrics/train_heads\.json.*dvc repro train_heads"):
        build_tables(["T7"], _evaluate(), RECON, CONTEXT)


def test_t4b_renders_and_t4_states_its_own_test_images_not_the_sample_counts():
    from stages.report import context, table_notes

    params = {"evaluate": {"samples_per_class": 100, "seed": 0, "sweeps": {"samples_per_class": 50}}}
    manifest = {"source": "digits", "num_classes": 10, "counts": {"test": {str(c): 50 for c in range(10)}}}
    degraded = {"num_images": 64, "seed": 0, "sigma_y": 0.05, "validation_images": 64, "validation_seed": 1}
    ctx = context(params, {"srdd": {"default": {"extractor": "x"}}}, manifest, None)
    tables = build_tables(["T1", "T4", "T4b"], _evaluate(), RECON, ctx, frontier=FRONTIER,
                          table_notes=table_notes(params, manifest, degraded))
    t1, t4, t4b = tables
    assert any(n.startswith("samples: 100 per class") for n in t1.notes)
    for t in (t4, t4b):
        assert not any(n.startswith("samples:") for n in t.notes)
        assert "test images: 64 per task (a seeded random subset of the 500 test images, seed 0)" in t.notes
        assert any("disjoint validation subset of 64 test images" in n for n in t.notes)
        assert any(n.startswith("noise: sigma_y = 0.05") for n in t.notes)
        assert {"dataset", "extractor", "seeds", "git commit"} <= {n.split(":")[0] for n in t.notes}
    md = to_markdown(tables)
    assert "## T4b: Posterior sampling frontier: PSNR vs seconds" in md
    assert ("| task | model | setting | particles | steps per scale | resampling iters | PSNR guided (dB) | "
            "PSNR guided_mean (dB) | consistency | s/img | x prior |") in md
    assert "| deblur | srdd | p4_s2 | 4 | 2 | 0 | 16.00 | 16.00 | 0.2 | 0.08 | 8 |" in md
    assert select_markdown(md, ["t4b"]).count("## T") == 1 and "## T4:" not in select_markdown(md, ["T4b"])
    assert "## T4b" not in select_markdown(md, ["T4"])
    assert check_names(["t4B", "T1"], ALL_TABLES) == ["T4b", "T1"]
    assert to_latex(tables).count("\\begin{tabular}") == 3


def test_experiment_settings_are_validated():
    from scalewise.core.config import ConfigError
    from scalewise.project.experiments import check_experiments

    assert check_experiments(None) == {} and check_experiments({}) == {}
    assert check_experiments({"deep-3": ["train.common.model.depth=3"]}) == {"deep-3": ["train.common.model.depth=3"]}
    with pytest.raises(ConfigError, match="name 'a b'"):
        check_experiments({"a b": ["x=1"]})
    with pytest.raises(ConfigError, match=r"experiments\.deep: expected a non-empty list of 'key=value'"):
        check_experiments({"deep": "train.common.model.depth=3"})
    with pytest.raises(ConfigError, match="must map a name"):
        check_experiments(["x=1"])
    assert check_names([], ("T1", "T6")) == ["T1", "T6"]


def test_git_commit_is_dirty_for_source_changes_not_for_pipeline_outputs(tmp_path):
    import subprocess

    from scalewise.project.tracking import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "metrics").mkdir()
    for name in ("dvc.lock", "metrics/m.json", "code.py"):
        (tmp_path / name).write_text("a")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert not git_commit(tmp_path).endswith("-dirty")
    (tmp_path / "dvc.lock").write_text("b")
    (tmp_path / "metrics/m.json").write_text("b")
    assert not git_commit(tmp_path).endswith("-dirty")  # a pipeline run rewrote its outputs
    (tmp_path / "code.py").write_text("b")
    assert git_commit(tmp_path).endswith("-dirty")


def test_t4b_plot_has_a_panel_per_task(tmp_path):
    from stages.report import plot_sweeps

    (t4b,) = build_tables(["T4b"], _evaluate(), RECON, CONTEXT, frontier=FRONTIER)
    (path,) = plot_sweeps({"T4b": t4b}, tmp_path)
    assert path.name == "t4b_posterior_frontier.png" and path.stat().st_size > 0


@pytest.mark.parametrize("records,expected", [
    ({"a": (2.05, 1.1), "b": (2.08, 1.4), "c": (2.5, 1.8)}, "b"),  # cheapest within 0.1 FID, and >= 1.3x
    ({"a": (2.05, 1.1), "b": (2.3, 1.4), "c": (2.5, 1.8)}, "b"),  # the close one is slow: best of the fast ones
    ({"a": (2.05, 1.1), "b": (2.08, 1.2)}, "b"),  # none reaches 1.3x: the cheapest close one
    ({"a": (3.0, 1.1), "b": (2.5, 1.2)}, "b"),  # none close, none fast: the lowest FID
])
def test_the_default_student_rule(records, expected):
    from scalewise.evaluation.distill_frontier import choose_student

    name, why = choose_student({n: {"fid": f, "speedup": s} for n, (f, s) in records.items()}, 2.0)
    assert name == expected and why
