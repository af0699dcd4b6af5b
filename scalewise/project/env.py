"""The environment of the subprocesses the project starts (dvc, stages)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def venv_env() -> dict[str, str]:
    """The environment with this interpreter's bin folder first on PATH (so ``python3`` is ours)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env
