"""The HNSW search breadth each vector query uses: the one ``manage.py tune_search`` measured for its (space,
version) on this store, else the store's default; or one forced for a measurement (``forced_ef``).

The measured value is read from ``SpaceVersion.tuned_ef`` and kept for ``CACHE_S`` per process, so a new tuning
reaches every process within that time without a query per search.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

CACHE_S = 30.0
_forced: ContextVar[int | None] = ContextVar("forced_ef", default=None)
_cache: dict[tuple[str, str, str], tuple[float, int | None]] = {}


def tuned_ef(store: str, space: str, version: str) -> int | None:
    """The breadth for a query of (space, version) on ``store`` ("pgvector" or "milvus"); None: the default."""
    forced = _forced.get()
    if forced is not None:
        return forced
    key = (store, space, version)
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and now - cached[0] < CACHE_S:
        return cached[1]
    from search.models import SpaceVersion

    row = SpaceVersion.objects.filter(space=space, version=version).values_list("tuned_ef", "tuned_store").first()
    value = row[0] if row is not None and row[1] == store else None  # tuned on another store: not this one's
    _cache[key] = (now, value)
    return value


@contextmanager
def forced_ef(ef: int) -> Iterator[None]:
    """Every query of this thread (or task) uses breadth ``ef`` until the block ends."""
    token = _forced.set(int(ef))
    try:
        yield
    finally:
        _forced.reset(token)


def forget() -> None:
    _cache.clear()
