"""Keep freed host memory in the process, so XLA:CPU's per-step temporaries do not page-fault.

XLA:CPU allocates every temporary buffer of a step with malloc and frees it at the end. With glibc's
defaults, buffers above the (dynamic) mmap threshold are unmapped on free and the per-thread arenas
trim their heaps, so the next step touches fresh pages: on the reference transformer of
benchmarks/train_throughput.py that was ~94k minor page faults and ~0.2 s of kernel time per
forward+backward (~30 % of the step). One arena, no mmap and no trimming bring it to ~19k faults and
~0.04 s (benchmarks/README.md). The process then keeps its peak heap, which for a training process is
what it needs again next step.

`mallopt` only affects arenas that threads attach to afterwards, so this must run before the JAX
backend starts its thread pool: `import scaling` does it. Set SCALING_MALLOC_TUNING=0 to leave
malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Tune glibc malloc (Linux only) to reuse freed memory; returns whether it applied."""
    if not sys.platform.startswith("linux") or os.environ.get("SCALING_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    return all(mallopt(option, value) == 1 for option, value in
               ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _INT_MAX), (_M_TRIM_THRESHOLD, _INT_MAX)))
