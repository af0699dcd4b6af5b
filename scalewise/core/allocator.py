"""Keep freed heap memory for reuse (glibc), so large activations stop costing page faults.

On CPU, every large tensor PyTorch frees goes back to the OS by default (glibc serves big
blocks with ``mmap``), and the next allocation of that size faults its pages in again: in
sampling and training on 2 cores this costs 10-40% of the time (copies, softmax and SiLU
run at page-fault speed). :func:`keep_freed_memory` raises glibc's mmap and trim thresholds
so freed blocks stay in the heap and are reused. Peak memory is unchanged (the same blocks
are reused); the process just does not shrink between steps.

The command line and the stages call it at start; ``SCALEWISE_KEEP_FREED_MEMORY=0`` turns it
off. Elsewhere than Linux/glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
ENV_VAR = "SCALEWISE_KEEP_FREED_MEMORY"
_state = {"applied": False}


def keep_freed_memory(threshold_bytes: int = 1 << 30) -> bool:
    """Serve allocations below ``threshold_bytes`` from the heap and never trim it.

    Returns True when the setting is in effect (also when applied earlier), False where it
    does not apply (not glibc, or turned off by ``SCALEWISE_KEEP_FREED_MEMORY=0``).
    """
    if _state["applied"]:
        return True
    if os.environ.get(ENV_VAR, "1").strip() in ("0", "false", "no") or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, int(threshold_bytes)) == 1 and ok
    _state["applied"] = ok
    return ok


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` is in effect in this process."""
    return _state["applied"]
