"""This process's memory: its peak so far, and handing back what a stage freed (docs/ARCHITECTURE.md §12)."""

from __future__ import annotations

import sys


def peak_rss_mib() -> float | None:
    """This process's peak resident memory so far, in MiB (None where ``resource`` is missing: Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def release_memory() -> None:
    """Hand the memory a stage freed back to the system: glibc keeps freed small blocks in its heaps (one per
    decode thread) and Arrow's allocator keeps its own, so what one stage freed would otherwise stay resident
    under the next stage's peak. docs/ARCHITECTURE.md §12."""
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None  # glibc only (not musl, macOS, Windows)
    except OSError:
        return None


_LIBC = _glibc() if sys.platform.startswith("linux") else None
