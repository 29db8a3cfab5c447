"""Process-level tuning for CPU work, applied by the command line (never on import).

PyTorch on CPU allocates and frees many large temporary tensors per step. With glibc's default
settings each one above the dynamic ``mmap`` threshold is mapped and unmapped again, and every page is
faulted in anew: about a tenth of the renderer's wall time on a 2-core machine goes to the kernel.
:func:`tune_allocator` keeps those blocks in the heap instead (``mallopt``), which only costs keeping
freed memory reserved for reuse. It is a no-op where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


@functools.cache
def tune_allocator() -> bool:
    """Ask glibc to keep large freed blocks for reuse (mmap threshold 32 MiB, trim threshold 1 GiB).

    Returns:
        True when the settings were applied (glibc found), else False.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    ok &= mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    ok &= mallopt(_M_TOP_PAD, 64 << 20)
    return bool(ok)
