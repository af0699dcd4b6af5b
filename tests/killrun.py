"""Test helpers for resumable training: kill a run from ``on_log``, resume it, compare two runs."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch


class Killed(Exception):
    """Raised from ``on_log``: the run stops as if killed (after its last checkpoint)."""


def kill_at(step: int) -> Callable[[int, dict], None]:
    """An ``on_log`` that kills the run when ``step`` is logged."""

    def on_log(logged: int, row: dict) -> None:
        if logged == step:
            raise Killed

    return on_log


def killed_then_resumed(train: Callable[..., Any], step: int) -> Any:
    """``train(on_log=...)`` killed at ``step``, then run again to the end: the resumed result."""
    with pytest.raises(Killed):
        train(on_log=kill_at(step))
    return train(on_log=None)


def assert_same_run(a: Any, b: Any) -> None:
    """Two training results have bit-identical weights and identical logged histories."""
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), f"{name} differs"
    assert a.history == b.history
