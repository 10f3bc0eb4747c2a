"""Memory: what this machine (or container) has, and fewer malloc heaps in the long-lived processes.

glibc gives every thread that allocates a heap of its own (up to eight per core) and gives a heap's memory back
only once nothing in it is live. Decode threads and ONNX Runtime streams taking turns with big buffers spread them
over many heaps that stay large: in a Celery pool process, a reindex of the demo catalogue left about 50 MB more
resident with glibc's default than with two heaps. And what a process freed after loading its models (parsed
model files, export checks) stays in its heap until :func:`malloc_release` hands it back.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path

M_ARENA_MAX = -8  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
ARENAS = 2
# Blocks from this size up get pages of their own, handed back as soon as they are freed. glibc's default starts
# at 128 KB but rises to the size of any such block freed, so after a few photo searches a decoded photo's
# megabytes stay in the heap; a fixed threshold keeps photos, batches and model buffers out of it.
MMAP_THRESHOLD = 1 << 20


def malloc_arenas_limit(arenas: int = ARENAS) -> bool:
    """Limit this process (and the processes it forks later) to ``arenas`` malloc heaps, and give big blocks pages
    of their own (:data:`MMAP_THRESHOLD`); True when it did.

    ``MALLOC_ARENA_MAX`` / ``MALLOC_MMAP_THRESHOLD_`` in the environment win (glibc read them at start); elsewhere
    than glibc nothing changes.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = True
        if not os.environ.get("MALLOC_ARENA_MAX"):
            done = bool(libc.mallopt(M_ARENA_MAX, arenas)) and done
        if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
            done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and done
    except (OSError, AttributeError):
        return False
    return done


def malloc_release() -> None:
    """Give the memory malloc holds but nothing uses back to the system (glibc only; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory_mb(limit_files: tuple[str, ...] = CGROUP_LIMITS) -> int:
    """The memory this process may use, in MiB: the machine's, or its container's limit when that is lower
    (cgroup v2 ``memory.max``, else v1 ``memory.limit_in_bytes``). 4,096 when nothing can be read."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError):
        total = 4096
    for limit_file in limit_files:
        with contextlib.suppress(OSError, ValueError):
            text = Path(limit_file).read_text().strip()
            if text != "max":
                total = min(total, int(text) // 2**20)
            break
    return max(256, total)


def shared_buffers_default() -> str:
    """A quarter of this machine's (or container's) memory, from 128 MB to 8 GB: PostgreSQL's usual advice, and what
    vector search needs, since every search walks its HNSW graph and reads its rows at random. At 100,000 products
    with a 512-d image space and a 384-d text space, the tables and indexes a hybrid search reads are 0.9 GB; with
    512 MB of buffers an eighth of its pages came from the operating system's cache (``docs/relevance.md``).
    PostgreSQL maps the buffers at start but the memory is only used as pages are read into them."""
    return f"{min(8192, max(128, machine_memory_mb() // 4))}MB"
