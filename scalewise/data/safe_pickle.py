"""A restricted unpickler for CIFAR's python batches: plain containers and numpy arrays only.

CIFAR ships its images as python pickles. ``pickle.load`` runs whatever callable a file names
(a ``__reduce__`` payload), so a downloaded folder could execute code. This loader resolves only
the globals numpy needs to rebuild an array; any other global is refused before it is called.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

# (module, name) pairs a CIFAR batch may name: numpy's array reconstruction (numpy 1 and 2 spell
# the module differently; protocol 5 uses _frombuffer), the dtype / ndarray classes, and
# _codecs.encode, with which python 3 writes bytes at protocol 2 (a pure function).
ALLOWED_GLOBALS = frozenset({
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
})


class UnsafePickleError(ValueError):
    """A pickle names a global outside :data:`ALLOWED_GLOBALS`."""


class _Restricted(pickle.Unpickler):
    def __init__(self, fh, path: Path) -> None:
        super().__init__(fh, encoding="bytes")  # python-2 pickles: keys are bytes (b"data")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(f"{self.path}: refused to unpickle: it names {module}.{name}, which a CIFAR batch "
                                "never holds (only plain containers and numpy arrays are loaded); the file may be "
                                "malicious or not a CIFAR batch")


def load_restricted(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` allowing only plain containers and numpy arrays (see the module)."""
    path = Path(path)
    with open(path, "rb") as fh:
        return _Restricted(fh, path).load()
