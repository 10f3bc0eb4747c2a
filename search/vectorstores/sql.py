"""SQL pieces the Postgres side of every store shares: safe literals, the shopper filters as conditions, the
column cast per dimension, and running a nearest-neighbour query with a search breadth that fits it."""

from __future__ import annotations

import hashlib
import re
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
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


def product_vector_sql(*, space: str, version: str, product: str, dimension: int | None = None) -> str:
    """A SELECT of the vector ``v`` that stands for a product in an image space version: its primary image's, else
    its first embedded image's (by position, then id). ``product``: the SQL for the product's id (a placeholder);
    ``dimension``: cast as the version's HNSW index expects (for a query vector inside a search statement)."""
    column = "qe.vector" if dimension is None else f"qe.vector::{storage_type(dimension)}({dimension})"
    return (f"SELECT {column} AS v FROM search_imageembedding qe JOIN catalog_productimage qi ON qi.id = qe.image_id "
            f"WHERE qi.product_id = {product} AND qe.space = {sql_literal(space)} "
            f"AND qe.model_version = {sql_literal(version)} AND qe.status = 'ok' "
            "ORDER BY qi.is_primary DESC, qi.position, qi.id LIMIT 1")  # fmt: skip


def configure_session(cursor: Any) -> None:
    """Per connection, once: pgvector 0.8 iterative scans (when filters reject candidates, keep walking
    the index instead of returning fewer than k rows) and a search breadth that fits k up to 50."""
    cursor.execute(f"SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = {SESSION_EF_SEARCH}")


BREADTH_PREFIX = re.compile(r"^SET LOCAL hnsw\.ef_search = [0-9]+; ")
# What a prepared search sends before its breadth the first time on a connection (see run_vector_query).
PREPARE_PREFIX = re.compile(r"^(?:DEALLOCATE ALL; )?(?:PREPARE vitrine_[0-9a-f]+ AS [^;]*; )?")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")
MAX_PREPARED = 100  # per connection; beyond, all are let go and prepared again as used
MISSING_STATEMENT = "26000"  # SQLSTATE invalid_sql_statement_name: no prepared statement of that name


def breadth(k: int, ef: int | None = None) -> int:
    """The HNSW search breadth for index scans that return up to ``k`` rows: ``ef`` (measured by ``tune_search``;
    None: the session's) and at least twice ``k``."""
    return min(1000, max(int(ef or SESSION_EF_SEARCH), 2 * int(k)))


class _Prepared:
    """The statements prepared on one database connection (by name), and whether they must all be let go first
    (after an error, when it is unknown which exist)."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.reset = False


_prepared: weakref.WeakKeyDictionary[Any, _Prepared] = weakref.WeakKeyDictionary()


def _server_placeholders(sql: str, params: Sequence[Any] | Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``sql`` with ``$1``, ``$2``… for its ``%s`` / ``%(name)s`` placeholders (``%%`` stays for the client's
    formatting of the message), and the arguments in that order."""
    named: list[str] = []
    by_name = params if isinstance(params, Mapping) else None
    positional = None if isinstance(params, Mapping) else iter(params)
    arguments: list[Any] = []

    def number(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%%"
        if match.group(1) is None:
            assert positional is not None, "a %s placeholder with named parameters"
            arguments.append(next(positional))
            return f"${len(arguments)}"
        assert by_name is not None, "a %(name)s placeholder with positional parameters"
        if match.group(1) not in named:
            named.append(match.group(1))
            arguments.append(by_name[match.group(1)])
        return f"${named.index(match.group(1)) + 1}"

    return _PLACEHOLDER.sub(number, sql), arguments


def _prepared_message(sql: str, params: Sequence[Any] | Mapping[str, Any],
                      prefix: str) -> tuple[str, list[Any], _Prepared, str]:  # fmt: skip
    """The message that runs ``sql`` as a prepared statement of this connection: ``[DEALLOCATE ALL;] [PREPARE
    name AS …;] SET LOCAL …; EXECUTE name(…)``."""
    body, arguments = _server_placeholders(sql, params)
    name = "vitrine_" + hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()[:20]
    state = _prepared.setdefault(connection.connection, _Prepared())
    head = ""
    if state.reset or (name not in state.names and len(state.names) >= MAX_PREPARED):
        head, state.reset = "DEALLOCATE ALL; ", False
        state.names.clear()
    if name not in state.names:
        head += f"PREPARE {name} AS {body}; "
    execute = f"EXECUTE {name}" + (f"({', '.join(['%s'] * len(arguments))})" if arguments else "")
    return head + prefix + execute, arguments, state, name


def run_vector_query(sql: str, params: Sequence[Any] | Mapping[str, Any], k: int,
                     ef: int | None = None) -> list[tuple[Any, ...]]:  # fmt: skip
    """Run a query whose index scans return up to ``k`` rows each, with the breadth :func:`breadth` gives, set for
    this query alone and in the same round trip.

    Django's psycopg cursors bind parameters on the client, so ``SET LOCAL …; <query>`` goes as one message, which
    PostgreSQL runs as one implicit transaction: the setting ends with it (inside a transaction block it lasts
    until the block ends; every vector query sets its own). A connection configured for server-side binding
    cannot send two statements at once: there, the setting and the query go in a transaction of their own.

    Outside a transaction block, with ``VITRINE_PG_PREPARED_SEARCHES`` on, the query is a prepared statement of
    the connection (``PREPARE`` in the same message the first time, ``EXECUTE`` after): PostgreSQL parses it once
    and, after a few runs, plans it once. A search statement is long (the hybrid one is 3 KB and its planning
    alone took 1 ms) and its text repeats with only its parameters changing, so this is most of what a search
    costs besides the search itself (``docs/relevance.md``). Values that shape the plan (limits, space, version)
    are in the text, not parameters, so each shape has a statement and a plan of its own. Inside a transaction
    block a failed PREPARE would abort the caller's transaction, so the query goes as it is; after any error the
    connection lets go of all its statements before the next, and a statement found missing is prepared again
    at once. Behind a pooler that moves a session between server connections (PgBouncer in transaction mode)
    that would be every other search: turn the setting off there.
    """
    prefix = f"SET LOCAL hnsw.ef_search = {breadth(k, ef)}; "
    if connection.settings_dict.get("OPTIONS", {}).get("server_side_binding"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(prefix.rstrip("; "))
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    with connection.cursor() as cursor:  # connects first when needed, so connection.connection is the live one
        if not settings.VITRINE_PG_PREPARED_SEARCHES or connection.in_atomic_block:
            cursor.execute(prefix + sql, params)
        else:
            message, arguments, state, name = _prepared_message(sql, params, prefix)
            try:
                cursor.execute(message, arguments)
            except Exception as exc:
                state.reset = True  # which statements survived the error is unknown: start again
                if getattr(exc.__cause__, "sqlstate", None) != MISSING_STATEMENT:
                    raise
                # Gone from under us (DISCARD ALL, a pooler that moved us to another server connection): once more,
                # preparing it in the same message.
                message, arguments, state, name = _prepared_message(sql, params, prefix)
                cursor.execute(message, arguments)
            state.names.add(name)
            while cursor.description is None and cursor.nextset():  # past DEALLOCATE, PREPARE and SET
                pass
            return list(cursor.fetchall())
        cursor.nextset()  # past the SET's empty result
        return list(cursor.fetchall())
