"""Loading a state dict into a model with an error that names the file and every mismatch."""

from __future__ import annotations

import os

import torch


def load_state_checked(model: torch.nn.Module, state: dict, path: str | os.PathLike,
                       expected: str = "its config", error: type[ValueError] = ValueError,
                       assign: bool = False) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped key raises ``error``.

    The message names ``path``, what the file was checked against (``expected``) and the keys
    (mis-shaped ones with both shapes). ``assign``: take the tensors as they are (a model built
    on the ``meta`` device).
    """
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    shape = [f"{k}: file {tuple(state[k].shape)} vs expected {tuple(ours[k].shape)}"
             for k in sorted(set(ours) & set(state)) if ours[k].shape != state[k].shape]
    if missing or unexpected or shape:
        def listed(keys: list[str]) -> str:
            return f"{keys[:10]}{' ...' if len(keys) > 10 else ''}"

        raise error(f"{path}: does not match {expected}: missing {listed(missing)}, "
                    f"unexpected {listed(unexpected)}, mis-shaped {listed(shape)}")
    model.load_state_dict(state, assign=assign)
