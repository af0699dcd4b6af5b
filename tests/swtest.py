"""Test helpers importable from every test module as ``swtest`` (``tests/`` is on sys.path;
the name avoids the top-level ``tests`` package that torch-fidelity installs)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def digits_u8(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits upsampled to ``size``: uint8 (N, 1, size, size), labels (N,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0, 255).round().to(torch.uint8), torch.tensor(d.target)


TINY_MODEL = dict(ch=8, ch_mult=[1, 2, 2], num_res_blocks=1, downsample=4, vocab_size=64, cvae=8,
                  patch_nums=[1, 2, 3, 4], quant_resi=0.5, share_quant_resi=2, beta=0.25, in_channels=1)


TINY_PARAMS = {
    "tracking": {"enabled": True, "experiment": "scalewise-test"},
    "prepare": {"source": "digits", "image_size": 16, "channels": 1, "test_fraction": 0.1,
                "split_seed": 0, "max_per_class": 60},
    "train_tokenizer": {
        "model": {"ch": 8, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "downsample": 4, "vocab_size": 64,
                  "cvae": 8, "patch_nums": [1, 2, 3, 4], "quant_resi": 0.5, "share_quant_resi": 2,
                  "beta": 0.25, "use_attn": False},
        "steps": 30, "batch_size": 16, "lr": 0.003, "weight_decay": 0.0, "warmup_steps": 5,
        "dead_code_every": 10, "dead_code_min_usage": 0.5, "log_every": 5, "ckpt_every": 10,
        "seed": 0, "device": "cpu",
    },
    "train": {
        "common": {"model": {"depth": 1, "width": 32, "heads": 2, "mlp_ratio": 2.0, "cond_drop": 0.1,
                             "masked_objective": True},
                   "steps": 10, "batch_size": 8, "lr": 0.002, "weight_decay": 0.0, "warmup_steps": 2,
                   "grad_clip": 2.0, "label_smoothing": 0.0, "masked_prob": 0.25, "log_every": 5,
                   "ckpt_every": 5, "seed": 0, "device": "cpu", "grid_per_class": 1, "grid_cfg": 1.5,
                   "threads": 0},
        "var": {"mask_kind": "causal", "init_from": None},
        "srdd": {"mask_kind": "markov", "init_from": None},
    },
    "degrade": {"num_images": 10, "sigma_y": 0.05, "seed": 0, "validation_images": 4,
                "tasks": {"box_inpaint": {"kind": "box_inpaint", "size": 6, "position": "center"},
                          "sr_x4": {"kind": "superres", "factor": 4, "mode": "area"}}},
    "reconstruct": {"methods": ["prior", "classical", "clamp", "guided", "guided_mean", "guided+dc", "clamp+guided",
                                "oracle"], "batch_size": 8,
                    "conditioning": "unconditional", "seed": 0, "device": "cpu", "grid_rows": 4, "threads": 0,
                    "guidance": {"preset": "default", "grad_steps": 1, "guide_from_scale": 2}},
    "restore_cost": {"variants": {"default": {}, "fast": {"preset": "fast"}, "masked_resampling": {"resample_iters": 1}},
                     "methods": ["prior", "guided"],
                     "runs": 1, "warmup": 0, "batch_size": 4, "seed": 0, "device": "cpu", "threads": 0},
    "posterior_frontier": {"num_images": 4, "particles": [1, 2], "grad_steps": [1], "batch_size": 8, "seed": 0,
                           "device": "cpu", "threads": 0,
                           "variants": {"default": {}, "fast": {"preset": "fast"},
                                        "masked_resampling": {"resample_iters": 1}}},
    "train_evaluator": {"width": 8, "feat_dim": 32, "steps": 40, "batch_size": 64, "lr": 0.004,
                        "weight_decay": 0.0005, "seed": 0, "device": "cpu", "augment": True},
    "distill_frontier": {"students": {"drop1": [2]}, "samples_per_class": 2},
    "train_heads": {"heads": {"hidden": 4}, "steps": 6, "batch_size": 8, "lr": 0.003, "warmup_steps": 2,
                    "log_every": 3, "ckpt_every": 3, "seed": 0, "device": "cpu", "max_param_fraction": 0.05},
    "distill": {"drop": [3], "steps": 6, "batch_size": 8, "lr": 0.001, "weight_decay": 0.0, "warmup_steps": 2,
                "grad_clip": 2.0, "kl_weight": 1.0, "temperature": 1.0, "masked_prob": 0.25, "log_every": 3,
                "ckpt_every": 3, "seed": 0, "device": "cpu", "grid_per_class": 1, "grid_cfg": 1.5,
                "bench_batch": 8, "bench_runs": 1, "threads": 0},
    "evaluate": {
        "models": ["var", "srdd", "srdd_distilled"], "samples_per_class": 4, "batch_size": 40, "seed": 0,
        "device": "cpu", "threads": 0, "kid_subset_size": 20, "inception_weights": None, "isolate": False,
        "grid_per_class": 2,
        "sampling": {"cfg": 1.5, "cfg_schedule": "linear", "top_k": 0, "top_p": 0.0, "temperature": 1.0,
                     "resample": {"kind": "none", "threshold": 0.05, "iters": 2, "use_cfg": True}},
        "settings": {"simple": {"resample": {"kind": "simple"}}, "masked": {"resample": {"kind": "masked"}}},
        "sweeps": {"models": ["srdd"], "samples_per_class": 3, "cfg": [0.0, 1.5], "cfg_resample": "masked",
                   "masked_threshold": [0.1], "masked_iters": [1, 2], "top_k": [5], "top_p": [0.9]},
    },
    "evaluate_heads": {"model": "srdd", "settings": {
        "policy": {"infer_mode": "policy", "resample": {"kind": "masked", "iters": 2}},
        "guidance": {"infer_mode": "guidance"},
        "both": {"infer_mode": "both", "resample": {"kind": "masked", "iters": 2}}}},
    "paper_table": {"cron": "0 4 * * 0"},
    "pipeline": {"cron": "0 3 * * *", "work_pool": "scalewise-test", "retries": 0},
}


def venv_env(root: Path) -> dict[str, str]:
    """The project's subprocess environment, isolated for a test project at ``root``."""
    from scalewise.project.env import venv_env as project_env

    env = project_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("SCALEWISE_PARENT_RUN_ID", None)
    env["PYTHONPATH"] = str(root)
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, env_extra: dict[str, str] | None = None,
        **kw) -> subprocess.CompletedProcess:
    env = venv_env(cwd)
    env.update(env_extra or {})
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_params(root: Path, params: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(dest: Path, params: dict) -> Path:
    """A git + DVC repository holding a copy of the pipeline code and ``params``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "paper/dvc.yaml", "scalewise", "stages", "flows"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / name)
    write_params(dest, params)
    (dest / ".gitignore").write_text("mlflow.db\nmlruns/\n__pycache__/\n.cache/\nstate/\n")  # as the project's own
    run(["git", "init", "-q"], dest)
    run([sys.executable, "-m", "dvc", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "init"], dest)
    return dest
