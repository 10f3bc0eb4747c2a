"""SQL pieces the Postgres side of every store shares: safe literals, the shopper filters as conditions, the
column cast per dimension, and running a nearest-neighbour query with a search breadth that fits it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connection, transaction

from search.vectorstores.base import Filters

_SAFE = re.compile(r"^[A-Za-z0-9._:+-]{1,200}$")
SESSION_EF_SEARCH = 100


def sql_literal(value: str) -> str:
    # Space keys and versions are ours, but never trust a string spliced into SQL.
    if not _SAFE.match(value):
        raise ValueError(f"unsafe identifier for SQL: {value!r}")
    return "'" + value + "'"


def filter_sql(filters: Filters | None) -> tuple[list[str], list[object]]:
    """SQL conditions on ``p`` (product) and ``c`` (category) for the shopper filters."""
    if filters is None:
        return [], []
    conditions: list[str] = []
    params: list[object] = []
    if filters.category_path:
        conditions.append("(c.path = %s OR c.path LIKE %s)")
        params += [filters.category_path, filters.category_path.replace("%", r"\%").replace("_", r"\_") + "/%"]
    if filters.price_min is not None:
        conditions.append("p.price >= %s")
        params.append(filters.price_min)
    if filters.price_max is not None:
        conditions.append("p.price <= %s")
        params.append(filters.price_max)
    if filters.in_stock:
        conditions.append("p.stock > 0")
    if filters.colour:
        # As search.models.colour_condition: the product's field, or one of its pictures (GIN index on names).
        conditions.append("(lower(p.color) = %s OR EXISTS (SELECT 1 FROM search_imagecolour ic JOIN "
                          "catalog_productimage ci ON ci.id = ic.image_id WHERE ci.product_id = p.id "
                          "AND ic.names @> ARRAY[%s]::varchar[]))")  # fmt: skip
        params += [filters.colour, filters.colour]
    return conditions, params


def storage_type(dimension: int) -> str:
    return "vector" if dimension <= 2000 else "halfvec"


def configure_session(cursor: Any) -> None:
    """Per connection, once: pgvector 0.8 iterative scans (when filters reject candidates, keep walking
    the index instead of returning fewer than k rows) and a search breadth that fits k up to 50."""
    cursor.execute(f"SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = {SESSION_EF_SEARCH}")


def run_vector_query(sql: str, params: Sequence[Any] | Mapping[str, Any], k: int,
                     ef: int | None = None) -> list[tuple[Any, ...]]:  # fmt: skip
    """Run a query whose index scans return up to ``k`` rows each, with search breadth ``ef`` (measured by
    ``tune_search``; None: the session's) and at least twice ``k``: in one round trip when that is the session's
    breadth, else with a breadth set for this query alone."""
    breadth = min(1000, max(int(ef or SESSION_EF_SEARCH), 2 * int(k)))
    if breadth == SESSION_EF_SEARCH:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL hnsw.ef_search = {breadth}")
        cursor.execute(sql, params)
        return list(cursor.fetchall())
