"""What the ``evaluate`` stages measure: ``params.yaml: evaluate`` and the plan of sampling settings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalewise.core.config import ConfigError
from scalewise.evaluation.settings import SamplingSetting, SweepConfig, setting_from, sweep_settings

TUNED = "masked_tuned_cfg"


@dataclass
class EvaluateConfig:
    """``params.yaml: evaluate``."""

    models: list[str] = field(default_factory=lambda: ["var", "srdd", "srdd_distilled"])
    samples_per_class: int = 100
    batch_size: int = 250
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    kid_subset_size: int = 500
    inception_weights: str | None = None  # inception-v3-compat weights file; null = domain evaluator
    isolate: bool = True  # each non-sweep sample set in a fresh process (clean speed / memory figures)
    grid_per_class: int = 8
    sampling: dict[str, Any] = field(default_factory=dict)  # the `default` setting
    settings: dict[str, Any] = field(default_factory=dict)  # name -> overrides of `sampling`
    sweeps: SweepConfig = field(default_factory=SweepConfig)

    def __post_init__(self) -> None:
        for name in ("samples_per_class", "batch_size", "grid_per_class"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"evaluate.{name} must be >= 1, got {getattr(self, name)}")
        if self.sweeps.samples_per_class < 1:
            raise ConfigError(f"evaluate.sweeps.samples_per_class must be >= 1, got {self.sweeps.samples_per_class}")


def reference_key(data_dir: str | Path) -> str:
    """The name of the test split's cached reference statistics (torch-fidelity adds the extractor's hash)."""
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    return f"test-{manifest['content_hash'][:16]}"


def setting_plan(cfg: EvaluateConfig, model: str) -> list[tuple[str, SamplingSetting, int, bool]]:
    """(name, setting, samples per class, is sweep) in evaluation order; ``masked_tuned_cfg`` is added later."""
    base = setting_from(SamplingSetting(), cfg.sampling, "evaluate.sampling")
    plan = [("default", base, cfg.samples_per_class, False)]
    for name, overrides in cfg.settings.items():
        if name == "default" or name == TUNED:
            raise ConfigError(f"evaluate.settings: {name!r} is a reserved setting name")
        plan.append((name, setting_from(base, overrides or {}, f"evaluate.settings.{name}"), cfg.samples_per_class,
                     False))
    plan += [(n, s, cfg.sweeps.samples_per_class, True) for n, s in sweep_settings(base, cfg.sweeps, model).items()]
    return plan


def folder_name(setting: str) -> str:
    """A file-system-safe name for a setting: the setting names (``masked_t0.05_n2``, ``cfg1.5``) already are
    one (unchanged); a user's own name with ``+ : = ,`` loses or replaces them (``a+b`` -> ``a_b``)."""
    return (setting.replace("+", "_").replace(":", "_").replace("=", "").replace(",", "_"))


@dataclass
class HeadsEvaluateConfig:
    """``params.yaml: evaluate_heads``: the learned-heads modes of one model (the rest as ``evaluate``)."""

    model: str = "srdd"  # models/<model>.pt; its heads: models/<model>_heads.pt
    settings: dict[str, Any] = field(default_factory=dict)  # name -> {infer_mode, overrides of evaluate.sampling}

    def plan(self, base: SamplingSetting) -> list[tuple[str, str, SamplingSetting]]:
        """(name, infer_mode, setting) of every named setting, checked."""
        from scalewise.sampling.adaptive import INFER_MODES, uses_policy

        out = []
        for name, values in self.settings.items():
            where = f"evaluate_heads.settings.{name}"
            values = dict(values or {})
            mode = values.pop("infer_mode", None)
            if mode not in INFER_MODES:
                raise ConfigError(f"{where}.infer_mode must be one of {list(INFER_MODES)}, got {mode!r}")
            setting = setting_from(base, values, where)
            if uses_policy(mode) and setting.resample_kind != "masked":
                raise ConfigError(f"{where}: infer_mode {mode!r} re-masks inside masked resampling: set "
                                  "resample: {kind: masked, iters: <the most iterations>}")
            out.append((name, mode, setting))
        return out
