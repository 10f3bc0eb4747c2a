"""The vector-store benchmark on Postgres: an exact scan, and HNSW over ``vector`` and ``halfvec``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection

from search.lab.benchmarks.stores_data import TABLE, Dataset, K, StoreResult, measure, measure_concurrent
from search.vectorstores.pgvector import HNSW_EF_CONSTRUCTION, HNSW_M, _copy_rows, maintenance_memory_mb

# --- Postgres ----------------------------------------------------------------------------------------


def pg_load(data: Dataset) -> float:
    """A table of our own, loaded with binary COPY in batches; returns seconds."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cursor.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, tag int NOT NULL, "
                       f"vector vector({data.dimension}))")  # fmt: skip
    connection.ensure_connection()
    batch = 50_000
    for start in range(0, data.n, batch):
        rows = ((i, int(data.tags[i]), data.vectors[i]) for i in range(start, min(data.n, start + batch)))
        with connection.connection.cursor() as cursor:  # autocommit: each batch commits
            _copy_rows(cursor, f"COPY {TABLE} (id, tag, vector) FROM STDIN (FORMAT BINARY)", ["int8", "int4", "vector"],
                       rows)  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {TABLE}")
    return time.perf_counter() - started


def _pg_size(relation: str) -> int:
    """Bytes on disk; for the table with its TOAST (vectors of 512 floats are stored out of line)."""
    function = "pg_table_size" if relation == TABLE else "pg_relation_size"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s)", [relation])
        return int(cursor.fetchone()[0])


@dataclass(frozen=True)
class Graph:
    """HNSW build parameters (the shop's defaults unless a run asks for a denser graph)."""

    m: int = HNSW_M
    ef_construction: int = HNSW_EF_CONSTRUCTION


def _pg_build(kind: str, data: Dataset, graph: Graph) -> tuple[float, str]:
    name = f"{TABLE}_{kind}_hnsw"
    memory = maintenance_memory_mb(rows=data.n, dimension=data.dimension, kind=kind, m=graph.m)
    workers = max(0, min(7, (os.cpu_count() or 2) - 1))
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {name}")
        cursor.execute(f"SET maintenance_work_mem = '{memory}MB'")
        cursor.execute(f"SET max_parallel_maintenance_workers = {workers}")
        started = time.perf_counter()
        column = "vector" if kind == "vector" else f"(vector::{kind}({data.dimension}))"
        cursor.execute(
            f"CREATE INDEX CONCURRENTLY {name} ON {TABLE} USING hnsw ({column} {kind}_cosine_ops) "
            f"WITH (m = {graph.m:d}, ef_construction = {graph.ef_construction:d})"
        )
        elapsed = time.perf_counter() - started
        cursor.execute("RESET maintenance_work_mem; RESET max_parallel_maintenance_workers")
    return elapsed, name


def _pg_sql(kind: str | None, dimension: int, filtered: bool) -> str:
    """``kind`` None: the exact scan; "vector" or "halfvec": the expression the HNSW index was built on."""
    cast = f"::{kind}({dimension})" if kind == "halfvec" else ""
    where = "WHERE tag = 0 " if filtered else ""
    return f"SELECT id FROM {TABLE} {where}ORDER BY (vector{cast}) <=> (%s::vector({dimension})){cast} LIMIT {K}"


def _pg_search(kind: str | None, dimension: int, filtered: bool) -> Callable[[np.ndarray], list[int]]:
    sql = _pg_sql(kind, dimension, filtered)

    def search(query: np.ndarray) -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute(sql, [_text(query)])
            return [row[0] for row in cursor.fetchall()]

    return search


def _text(query: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in query) + "]"


def _pg_settings(**values: Any) -> None:
    with connection.cursor() as cursor:
        for key, value in values.items():
            cursor.execute(f"SET {key} = {value}")


def bench_pg_exact(data: Dataset, queries: int) -> StoreResult:
    result = StoreResult(store="exact")
    # No index on the expression the query orders by: a (parallel) sequential scan, the exact answer.
    _pg_settings(enable_indexscan="off")
    try:
        q = data.queries[:queries]
        result.sweep.append(measure(_pg_search(None, data.dimension, False), q, data.truth[:queries], None))
        result.sweep_filtered.append(measure(_pg_search(None, data.dimension, True), q,
                                              data.truth_filtered[:queries], None))  # fmt: skip
    finally:
        _pg_settings(enable_indexscan="on")
    result.disk_bytes_per_vector = _pg_size(TABLE) / data.n
    result.notes.append(f"{len(q)} queries (a full scan each)")
    return result


def _concurrency(result: StoreResult, kind: str, data: Dataset, clients: Sequence[int], target: float) -> None:
    """QPS at the operating point (the best point when none reaches ``target``) with each count of clients."""
    point = result.operating_point(target) or (result.sweep[-1] if result.sweep else None)
    if point is None or point.ef is None or not clients:
        return
    result.concurrent_ef = ef = point.ef

    def make_search() -> Callable[[np.ndarray], list[int]]:
        _pg_settings(**{"hnsw.ef_search": ef, "hnsw.iterative_scan": "relaxed_order",
                        "enable_seqscan": "off"})  # fmt: skip
        return _pg_search(kind, data.dimension, False)

    for count in clients:
        result.concurrent_qps[count] = measure_concurrent(make_search, data.queries, count)


def bench_pg_hnsw(kind: str, data: Dataset, load_s: float, ef_sweep: Sequence[int],
                  graph: Graph = Graph(), clients: Sequence[int] = (),
                  target: float = 0.95) -> StoreResult:  # fmt: skip
    result = StoreResult(store="pgvector" if kind == "vector" else "halfvec", load_s=load_s)
    result.index_build_s, name = _pg_build(kind, data, graph)
    index_bytes = _pg_size(name)
    result.disk_bytes_per_vector = (_pg_size(TABLE) + index_bytes) / data.n
    # What must stay in memory (shared buffers / page cache) for fast queries: the graph with its vectors.
    result.memory_bytes_per_vector = index_bytes / data.n
    # The index's figures, not a scan's: with a selective filter the planner may prefer a sequential
    # scan (exact, and at small N faster); the shop leaves that choice to it, the benchmark does not.
    _pg_settings(enable_seqscan="off")
    with connection.cursor() as cursor:
        for filtered in (False, True):
            cursor.execute("EXPLAIN " + _pg_sql(kind, data.dimension, filtered), [_text(data.queries[0])])
            plan = " ".join(row[0] for row in cursor.fetchall())
            if name not in plan:
                result.notes.append(f"planner did not use the index (filtered={filtered}): {plan[:200]}")
    for ef in ef_sweep:
        _pg_settings(**{"hnsw.ef_search": ef, "hnsw.iterative_scan": "relaxed_order"})
        result.sweep.append(measure(_pg_search(kind, data.dimension, False), data.queries, data.truth, ef))
        result.sweep_filtered.append(measure(_pg_search(kind, data.dimension, True), data.queries,
                                              data.truth_filtered, ef))  # fmt: skip
    _concurrency(result, kind, data, clients, target)
    _pg_settings(**{"hnsw.ef_search": 100, "enable_seqscan": "on"})
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {name}")  # the next index type gets the table to itself
    result.notes.append(f"HNSW m={graph.m}, ef_construction={graph.ef_construction}; iterative scan relaxed_order")
    return result
