"""Typed configs: numbers as YAML writes them, and wrong types that name the field and the file."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest

from scalewise.core.config import ConfigError, coerce, from_dict
from scalewise.project.params import load_params
from scalewise.training.tokenizer import TrainTokenizerConfig
from swtest import ROOT, TINY_PARAMS, run


@dataclass
class Inner:
    size: int = 1
    ratio: float = 0.5


@dataclass
class Outer:
    lr: float = 1e-3
    steps: int = 10
    flag: bool = False
    name: str = "x"
    path: str | None = None
    sizes: list[int] = field(default_factory=list)
    mode: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)


@pytest.mark.parametrize("text,expected", [("1e-3", 1e-3), ("5E+3", 5e3), ("-2.5e-1", -0.25), (".5e1", 5.0)])
def test_exponent_strings_are_numbers(text, expected):
    assert coerce(text, float, "f") == expected and isinstance(coerce(text, float, "f"), float)


def test_integral_exponent_strings_are_ints():
    cfg = from_dict(Outer, {"steps": "5e+3", "lr": "1e-4", "sizes": [1, "2e1"]}, "p.yaml: s")
    assert (cfg.steps, cfg.lr, cfg.sizes) == (5000, 1e-4, [1, 20]) and isinstance(cfg.steps, int)


@pytest.mark.parametrize("values,match", [
    ({"lr": "fast"}, r"p\.yaml: s\.lr: expected a number, got 'fast'"),
    ({"lr": "0.001"}, r"s\.lr: expected a number"),  # a quoted number stays a string
    ({"lr": True}, r"s\.lr: expected a number"),
    ({"steps": 2.5}, r"s\.steps: expected an integer, got 2\.5"),
    ({"steps": "2.5e0"}, r"s\.steps: expected an integer"),
    ({"steps": "32"}, r"s\.steps: expected an integer"),
    ({"flag": "yes"}, r"s\.flag: expected true or false"),
    ({"name": 3}, r"s\.name: expected a string"),
    ({"path": 3}, r"s\.path: expected str \| None, got 3"),
    ({"sizes": [1, "a"]}, r"s\.sizes\[1\]: expected an integer"),
    ({"sizes": 3}, r"s\.sizes: expected a list"),
    ({"mode": "c"}, r"s\.mode: expected one of \['a', 'b'\]"),
    ({"inner": {"size": "big"}}, r"s\.inner\.size: expected an integer"),
    ({"inner": 4}, r"s\.inner: expected a mapping of Inner settings"),
])
def test_wrong_types_name_the_field(values, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Outer, values, "p.yaml: s")


def test_good_values_pass_unchanged():
    cfg = from_dict(Outer, {"lr": 2, "steps": 3.0, "path": None, "mode": "b", "inner": {"ratio": 1}}, "p")
    assert (cfg.lr, cfg.steps, cfg.path, cfg.mode, cfg.inner) == (2, 3, None, "b", Inner(1, 1))


def test_params_file_numbers_in_exponent_form(tmp_path):
    """PyYAML reads ``1e-3`` as a string; the config reads it as the number it is."""
    path = tmp_path / "params.yaml"
    path.write_text("train_tokenizer:\n  lr: 1e-3\n  steps: 5e+3\n  weight_decay: 5.0e-2\n")
    raw = load_params(path)["train_tokenizer"]
    assert raw["lr"] == "1e-3"  # what YAML 1.1 gives
    cfg = from_dict(TrainTokenizerConfig, raw, f"{path}: train_tokenizer")
    assert (cfg.lr, cfg.steps, cfg.weight_decay) == (1e-3, 5000, 0.05)


def _tiny_params_text(lr: str) -> str:
    import yaml

    params = {k: TINY_PARAMS[k] for k in ("prepare", "train_tokenizer")}
    params["tracking"] = {"enabled": False}
    params["train_tokenizer"] = {**params["train_tokenizer"], "steps": 3, "log_every": 1, "ckpt_every": 3}
    text = yaml.safe_dump(params, sort_keys=False)
    return text.replace("lr: 0.003", f"lr: {lr}")


@pytest.mark.integration
def test_stage_reads_exponent_numbers_and_rejects_wrong_types(tmp_path):
    """``lr: 1e-3`` trains; ``lr: fast`` exits 2 naming the field and the file, before any work."""
    params = tmp_path / "params.yaml"
    params.write_text(_tiny_params_text("1e-3"))
    run([sys.executable, "-m", "stages.prepare"], tmp_path, env_extra={"PYTHONPATH": str(ROOT)})
    run([sys.executable, "-m", "stages.train_tokenizer"], tmp_path, env_extra={"PYTHONPATH": str(ROOT)})
    assert (tmp_path / "models/tokenizer.pt").is_file()

    params.write_text(_tiny_params_text("fast"))
    proc = run([sys.executable, "-m", "stages.train_tokenizer"], tmp_path, check=False,
               env_extra={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    assert "params.yaml: train_tokenizer.lr: expected a number, got 'fast'" in proc.stderr
    assert "Traceback" not in proc.stderr
