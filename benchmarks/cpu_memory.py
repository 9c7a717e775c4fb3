"""How a CPU training process gets its memory from the C library (glibc's ``malloc``).

By default glibc serves every block above its mmap threshold (at most 32 MiB) with fresh pages from
the kernel and hands them back on ``free``; a tensor that large is then page-faulted in again, page by
page, on every update. CQL with five seeds holds 40 MiB activations (31 critic inputs per sample): on
the 2-core development machines (hopper sizes) its update caused 240,000 minor page faults and took
830-915 ms with glibc's defaults, and none and 587-623 ms with freed memory kept in the process; DQL's
update (13 faults either way) and the other agents' did not change beyond the machine's noise. (PyTorch's CPU performance-tuning guide recommends
jemalloc or tcmalloc for the same reason; this needs no preloaded library.)

Elsewhere than glibc (musl, macOS) both functions do nothing and say so by returning False.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # <malloc.h>: free memory kept at the top of the heap before it is returned
M_MMAP_MAX = -4  # <malloc.h>: how many blocks may be served by mmap (0: none, all from the heap)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 -- both exist only in glibc
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Serve all allocations from the heap and never return freed memory to the kernel (``mallopt``)."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def release_freed_memory() -> bool:
    """Return the heap's free memory to the kernel now (``malloc_trim(0)``), e.g. before a resident-set
    measurement that must not count memory an earlier measurement freed."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
