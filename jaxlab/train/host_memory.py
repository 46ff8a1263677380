"""Keep freed host memory in the process (glibc malloc), for CPU training speed.

XLA's CPU client allocates each executable's temporaries as one buffer per call (2.6 GB
for the d512 x 8-layer, batch 16 x 256 train step). glibc's malloc serves an allocation
that big with a fresh ``mmap`` from a worker thread's arena and ``munmap``s it on free,
so every step page-faults all of it back in: on the 2-core benchmark machine that was
about 0.6 s of a 3.6 s step (4.6 M minor faults in a 10-step run, 1.4 M after this).

:func:`keep_host_memory` makes every thread share the main arena and stops malloc from
using ``mmap`` or returning freed memory to the OS, so the buffer is reused from step to
step. The cost is that the process keeps its peak host memory until it exits, as a
training process does anyway. It must run before JAX starts its CPU client (whose worker
threads would otherwise have their own arenas already); ``python -m jaxlab.train`` calls
it first thing. Set ``JAXLAB_KEEP_HOST_MEMORY=0`` to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def keep_host_memory() -> bool:
    """Tunes glibc malloc as described above; returns whether it did (glibc Linux only)."""
    if os.environ.get("JAXLAB_KEEP_HOST_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # -1 disables trimming (man mallopt); 0 mmaps means big blocks come from the heap.
    return all(mallopt(param, value) == 1 for param, value in
               ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
