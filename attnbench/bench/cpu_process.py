"""Process-wide settings for a run on the CPU: a cap on the address space, and glibc keeping
freed memory between passes."""

from __future__ import annotations

import ctypes
import resource
from collections.abc import Callable
from pathlib import Path


def _limit_memory(gb: float) -> Callable[[], None]:
    """Cap the address space at current + gb (Linux); returns the undo."""
    try:
        status = Path("/proc/self/status").read_text()
        vm_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmSize:")
        )
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = vm_kb * 1024 + int(gb * 2**30)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, StopIteration, ValueError):
        return lambda: None
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def keep_freed_memory() -> bool:
    """glibc: keep freed memory in the process instead of handing it back after every pass,
    as PyTorch's caching allocator does on a GPU. Otherwise glibc's dynamic thresholds trim
    and page-fault some buffers of a few MiB again each pass, depending on their size, which
    adds size-dependent jumps to the timings of the O(N) variants."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from malloc.h
    return bool(
        libc.mallopt(m_mmap_threshold, 32 << 20)  # the largest glibc accepts
        and libc.mallopt(m_trim_threshold, 2**31 - 1)
    )
