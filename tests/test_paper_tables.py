"""The paper tables: built from metrics dicts, rendered as Markdown / CSV / LaTeX, clear errors."""

from __future__ import annotations

import csv
import io

import pytest

from scalewise.evaluation.paper_tables import (
    TABLES, MissingResult, build_tables, check_names, select_markdown, to_csv, to_latex, to_markdown,
)


def _result(fid: float, cfg: float = 1.5, kind: str = "none", steps: int = 7) -> dict:
    return {"fid": fid, "isc": 2.0, "kid": 0.01, "precision": 0.8, "recall": 0.7, "images_per_s": 100.0 / steps,
            "peak_memory_bytes": 3 * 2**20, "cache_bytes": 0 if kind else 1, "steps": steps, "extractor": "x",
            "setting": {"cfg": cfg, "resample_kind": kind}}


def _evaluate() -> dict:
    srdd = {"default": _result(10.0), "simple": _result(9.0, kind="simple"), "masked": _result(8.0, kind="masked"),
            "masked+tuned_cfg": _result(7.0, cfg=2.0, kind="masked")}
    srdd.update({f"cfg={c:g}": _result(10 - c, cfg=c, kind="masked") for c in (0.0, 1.0, 2.0)})
    srdd.update({f"masked:t={t:g},n={n}": _result(8 + t - n / 10, kind="masked") for t in (0.05, 0.1) for n in (1, 2)})
    return {"var": {"default": _result(11.0)}, "srdd": srdd, "srdd_distilled": {"default": _result(12.0, steps=5)}}


RECON = {v: {"sr_x4": {m: {"psnr": 14.0, "ssim": 0.5, "consistency": 1.0, "sec_per_image": 0.01, "fid": 20.0}
                       for m in ("prior", "guided")}} for v in ("var", "srdd")}
CONTEXT = {"dataset": "digits", "git commit": "abc123"}


def test_every_table_has_its_rows_and_states_its_context():
    tables = build_tables(list(TABLES), _evaluate(), RECON, CONTEXT)
    by = {t.key: t for t in tables}
    assert [t.key for t in tables] == ["T1", "T2", "T3", "T4", "T5"]
    assert [r[0] for r in by["T1"].rows] == ["VAR", "SRDD", "SRDD + simple resampling", "SRDD + masked resampling",
                                               "SRDD + MR + tuned CFG", "SRDD distilled"]
    assert by["T1"].rows[4][2] == "masked, cfg=2" and by["T1"].rows[5][8] == 5  # tuned CFG shown; distilled steps
    assert [(r[0], r[1]) for r in by["T2"].rows] == [(0.05, 1), (0.05, 2), (0.1, 1), (0.1, 2)]
    assert [r[0] for r in by["T3"].rows] == [0.0, 1.0, 2.0] and by["T3"].rows[2][2] == 8.0
    assert len(by["T4"].rows) == 4 and {r[2] for r in by["T4"].rows} == {"var", "srdd"}
    assert by["T5"].rows[2][3] == pytest.approx((100 / 5) / (100 / 7))  # distilled speed-up vs VAR
    for t in tables:
        assert "dataset: digits" in t.notes and "git commit: abc123" in t.notes
        assert all(len(r) == len(t.columns) for r in t.rows)


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
    with pytest.raises(ValueError, match=r"unknown table name\(s\) \['T9'\]"):
        check_names(["T1", "T9"])
    evaluate = _evaluate()
    del evaluate["srdd"]["masked"]
    with pytest.raises(MissingResult, match="no setting 'masked'.*evaluate.settings"):
        build_tables(["T1"], evaluate, RECON, CONTEXT)
    with pytest.raises(MissingResult, match="no model 'srdd_distilled'"):
        build_tables(["T5"], {k: v for k, v in _evaluate().items() if k != "srdd_distilled"}, RECON, CONTEXT)
    with pytest.raises(MissingResult, match="no CFG sweep"):
        build_tables(["T3"], {"srdd": {"default": _result(1.0)}}, RECON, CONTEXT)


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
