"""Transaction-scoped PostgreSQL advisory locks: what makes get-or-create and shared files safe under concurrency.

A lock is taken inside ``transaction.atomic()`` and held until the outermost transaction ends, so whoever
waits for it then sees the holder's committed rows. Keys are hashed to 32 bits: two different keys may share
a lock now and then, which costs a short wait, never correctness. Take kinds in the order of ``Kind`` (a
transaction that holds a category lock never asks for a checksum lock), keys within a kind sorted: then two
transactions cannot wait for each other.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable

from django.db import connection

_BASE = 0x56540000  # "VT": keeps these locks apart from other applications' on the same database


class Kind(enum.IntEnum):
    CHECKSUM = 1  # an image's content hash: its row and its content-addressed files
    SKU = 2  # a product's SKU
    CATEGORY = 3  # a category's name under its parent


def _key(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=4).digest(), "big", signed=True)


def xact_lock(*, kind: Kind, keys: Iterable[str]) -> None:
    """Wait for (and hold until the transaction ends) the locks of ``keys``, in a fixed order."""
    if not connection.in_atomic_block:
        raise RuntimeError("an advisory lock outside a transaction would be released at once")
    with connection.cursor() as cursor:
        for key in sorted({_key(k) for k in keys}):
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_BASE + kind, key])
