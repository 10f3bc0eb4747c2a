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


BREADTH_PREFIX = re.compile(r"^SET LOCAL hnsw\.ef_search = [0-9]+; ")


def breadth(k: int, ef: int | None = None) -> int:
    """The HNSW search breadth for index scans that return up to ``k`` rows: ``ef`` (measured by ``tune_search``;
    None: the session's) and at least twice ``k``."""
    return min(1000, max(int(ef or SESSION_EF_SEARCH), 2 * int(k)))


def run_vector_query(sql: str, params: Sequence[Any] | Mapping[str, Any], k: int,
                     ef: int | None = None) -> list[tuple[Any, ...]]:  # fmt: skip
    """Run a query whose index scans return up to ``k`` rows each, with the breadth :func:`breadth` gives, set for
    this query alone and in the same round trip.

    Django's psycopg cursors bind parameters on the client, so ``SET LOCAL …; <query>`` goes as one message, which
    PostgreSQL runs as one implicit transaction: the setting ends with it (inside a transaction block it lasts
    until the block ends; every vector query sets its own). A connection configured for server-side binding
    cannot send two statements at once: there, the setting and the query go in a transaction of their own.
    """
    prefix = f"SET LOCAL hnsw.ef_search = {breadth(k, ef)}; "
    if connection.settings_dict.get("OPTIONS", {}).get("server_side_binding"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(prefix.rstrip("; "))
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    with connection.cursor() as cursor:
        cursor.execute(prefix + sql, params)
        cursor.nextset()  # past the SET's empty result
        return list(cursor.fetchall())
