"""Loading a state dict into a model with an error that names the file and every mismatch or
non-finite tensor."""

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
    check_finite_state({k: state[k] for k, _ in model.named_parameters()}, path, error)  # weights, not buffers
    model.load_state_dict(state, assign=assign)


def check_finite_state(state: dict, path: str | os.PathLike, error: type[ValueError] = ValueError) -> None:
    """Raise ``error`` naming ``path`` and the tensors when a floating-point tensor holds NaN or inf.

    Pass the weights only: some buffers are infinite by design (a retired codebook-usage EMA).

    A model with non-finite weights samples garbage (every distribution NaN); training that
    diverged must not be loaded as if it had finished.
    """
    bad = [k for k, v in state.items()
           if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise error(f"{path}: {len(bad)} weight tensor(s) hold NaN or inf values (e.g. {bad[:5]}): the file is "
                    "damaged or its training diverged; retrain it or load an earlier checkpoint")
