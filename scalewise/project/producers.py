"""Which DVC stage writes a file: the hint a "missing file" error gives."""

from __future__ import annotations

import os
from pathlib import Path


def producing_stage(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str | None:
    """The address of the stage whose outputs hold ``path`` (e.g. ``train@var``), or None.

    ``root``: the DVC project (default: the one around the working directory). None as well
    when there is no DVC project or its ``dvc.yaml`` cannot be read: the caller's error then
    stands without the hint.
    """
    try:
        from dvc.repo import Repo

        with Repo(root) as repo:
            target = Path(path).resolve()
            for stage in repo.index.stages:
                for out in stage.outs:
                    out_path = Path(out.fs_path).resolve()
                    if target == out_path or out_path in target.parents:
                        return stage.addressing
    except Exception:  # no project, a broken dvc.yaml, ...: only the hint is lost
        return None
    return None
