"""Two vector searches at the same time, for a store whose searches wait on a server (the Milvus store's hybrid
ranking: its image and its text search)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")

_search_threads: ThreadPoolExecutor | None = None
_search_threads_lock = threading.Lock()


def both_at_once(first: Callable[[], list[_T]] | None,
                 second: Callable[[], list[_T]] | None) -> tuple[list[_T], list[_T]]:  # fmt: skip
    """Two searches at the same time: the first on a thread of this process's small pool, the second here; a
    search left out (None) finds nothing. Either one's error is raised, after both have ended."""
    global _search_threads
    if first is None or second is None:
        return (first() if first else []), (second() if second else [])
    with _search_threads_lock:
        if _search_threads is None:  # made on first use: after gunicorn's fork, in the process that searches
            _search_threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="vector-search")
    future = _search_threads.submit(first)
    try:
        second_found = second()
    finally:
        first_found = future.result()
    return first_found, second_found
