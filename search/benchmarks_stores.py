"""Vector-store benchmark for ``manage.py benchmark --stores …``: the same synthetic vectors in every store.

For N clustered unit vectors (:func:`search.benchmarks.clustered_vectors`, so approximate
search is not trivial) and Q held-out queries drawn from the same clusters, per store:

* load time (binary COPY / batched inserts) and index build time, the index built once
  after the load, as the stores' own bulk paths do;
* disk and memory per vector (``pg_relation_size`` of table and index; the milvus-lite
  data folder and the resident memory its process gained while loading);
* search latency p50/p95 and single-client QPS, and recall@10 against the exact answer
  (numpy brute force over the same float32 vectors), over an ``ef_search`` sweep; the
  operating point is the smallest ``ef`` whose recall@10 reaches the target;
* the same with a filter that keeps a fraction of the vectors (``--filter-selectivity``),
  drawn independently of the clusters: the hard case for a graph index, which has to
  walk past what the filter rejects (pgvector iterative scans, FAISS ID selectors).

Stores: ``exact`` (Postgres sequential scan, no index), ``pgvector`` (HNSW over
``vector``), ``halfvec`` (HNSW over a ``halfvec`` cast of the same column, as this
project indexes >2,000-d models) and ``milvus`` (the collection layout and index
settings of :class:`search.vectorstores.milvus.MilvusStore`, in a milvus-lite file).
The engines are measured directly, on a table/collection of their own, not through the
shop's joins: that is what this benchmark is for; the shop path is ``--search-quality``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection

from search.benchmarks import cluster_centers, clustered_vectors
from search.vectorstores.pgvector import HNSW_EF_CONSTRUCTION, HNSW_M, _copy_rows, maintenance_memory_mb

STORES = ("exact", "pgvector", "halfvec", "milvus")
TABLE = "bench_store_vectors"
EF_SWEEP = (10, 20, 40, 80, 160, 320, 640)
K = 10


@dataclass
class Dataset:
    vectors: np.ndarray  # (N, d) float32, unit length
    tags: np.ndarray  # (N,) int: the filter keeps tag == 0
    queries: np.ndarray  # (Q, d)
    truth: list[list[int]]  # exact top-K ids per query
    truth_filtered: list[list[int]]
    selectivity: float

    @property
    def n(self) -> int:
        return len(self.vectors)

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])


def _exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None) -> list[list[int]]:
    """Brute-force cosine top-k (vectors are unit length: cosine = dot product), in chunks to bound memory."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), k), dtype=np.int64)
    step = 200_000
    for start in range(0, len(vectors), step):
        scores = queries @ vectors[start : start + step].T
        if mask is not None:
            scores[:, ~mask[start : start + step]] = -np.inf
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.arange(start, start + scores.shape[1])
        merged_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, top, axis=1)
        best_ids = np.take_along_axis(merged_ids, top, axis=1)
    order = np.argsort(-best_scores, axis=1)
    return np.take_along_axis(best_ids, order, axis=1).tolist()


def make_dataset(*, n: int, dimension: int, queries: int, selectivity: float, clusters: int = 1000,
                 seed: int = 42) -> Dataset:  # fmt: skip
    rng = np.random.default_rng(seed)
    centers = cluster_centers(rng, clusters=clusters, dimension=dimension)
    vectors, _ = clustered_vectors(rng, centers=centers, n=n)
    held_out, _ = clustered_vectors(rng, centers=centers, n=queries)
    tags = (rng.random(n) >= selectivity).astype(np.int64)  # 0 for the kept fraction, independent of clusters
    return Dataset(vectors=vectors, tags=tags, queries=held_out, truth=_exact_top_k(vectors, held_out, K),
                   truth_filtered=_exact_top_k(vectors, held_out, K, mask=tags == 0),
                   selectivity=selectivity)  # fmt: skip


@dataclass
class Point:
    ef: int | None
    recall: float
    p50_ms: float
    p95_ms: float
    qps: float


@dataclass
class StoreResult:
    store: str
    load_s: float = 0.0
    index_build_s: float = 0.0
    disk_bytes_per_vector: float = 0.0
    memory_bytes_per_vector: float = 0.0
    notes: list[str] = field(default_factory=list)
    sweep: list[Point] = field(default_factory=list)
    sweep_filtered: list[Point] = field(default_factory=list)

    def operating_point(self, target: float, filtered: bool = False) -> Point | None:
        """The first (cheapest) point of the sweep that reaches the recall target."""
        for point in self.sweep_filtered if filtered else self.sweep:
            if point.recall >= target:
                return point
        return None


def _measure(search: Callable[[np.ndarray], list[int]], queries: np.ndarray, truth: list[list[int]],
             ef: int | None) -> Point:  # fmt: skip
    for query in queries[: min(5, len(queries))]:  # warm caches and code paths; not measured
        search(query)
    times: list[float] = []
    recalls: list[float] = []
    started = time.perf_counter()
    for query, expected in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        got = search(query)
        times.append(time.perf_counter() - t0)
        recalls.append(len(set(got[:K]) & set(expected)) / max(1, len(expected)))
    total = time.perf_counter() - started
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return Point(ef=ef, recall=float(np.mean(recalls)), p50_ms=1000 * statistics.median(times), p95_ms=1000 * p95,
                 qps=len(queries) / total)  # fmt: skip


# --- Postgres ----------------------------------------------------------------------------------------


def _pg_load(data: Dataset) -> float:
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
        result.sweep.append(_measure(_pg_search(None, data.dimension, False), q, data.truth[:queries], None))
        result.sweep_filtered.append(_measure(_pg_search(None, data.dimension, True), q,
                                              data.truth_filtered[:queries], None))  # fmt: skip
    finally:
        _pg_settings(enable_indexscan="on")
    result.disk_bytes_per_vector = _pg_size(TABLE) / data.n
    result.notes.append(f"{len(q)} queries (a full scan each)")
    return result


def bench_pg_hnsw(kind: str, data: Dataset, load_s: float, ef_sweep: Sequence[int],
                  graph: Graph = Graph()) -> StoreResult:  # fmt: skip
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
        result.sweep.append(_measure(_pg_search(kind, data.dimension, False), data.queries, data.truth, ef))
        result.sweep_filtered.append(_measure(_pg_search(kind, data.dimension, True), data.queries,
                                              data.truth_filtered, ef))  # fmt: skip
    _pg_settings(**{"hnsw.ef_search": 100, "enable_seqscan": "on"})
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {name}")  # the next index type gets the table to itself
    result.notes.append(f"HNSW m={graph.m}, ef_construction={graph.ef_construction}; iterative scan relaxed_order")
    return result


# --- Milvus ---------------------------------------------------------------------------------------------


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _rss_bytes() -> int:
    """Resident memory of this process and its children (milvus-lite may serve from either)."""
    import psutil

    me = psutil.Process()
    return int(me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True)))


def _reusable(client: Any, name: str, n: int) -> bool:
    """A complete, indexed collection of ``n`` rows from an earlier run of the same dataset."""
    if not client.has_collection(name) or not client.list_indexes(name):
        return False
    client.load_collection(name)
    return int(client.get_collection_stats(name).get("row_count", 0)) == n


def bench_milvus(data: Dataset, ef_sweep: Sequence[int], folder: Path, reuse: bool = False) -> StoreResult:
    """``reuse``: keep a collection an interrupted run loaded and indexed (same seed, same N) and measure
    its searches; its load and build times are then those recorded in ``folder/timings.json``."""
    from pymilvus import DataType, MilvusClient, MilvusException

    result = StoreResult(store="milvus")
    uri = str(folder / "bench.db")
    timings = folder / "timings.json"
    rss_before = _rss_bytes()
    name = "bench_store_vectors"
    if reuse and Path(uri).exists():
        client = MilvusClient(uri=uri)
        if _reusable(client, name, data.n):
            recorded = json.loads(timings.read_text()) if timings.exists() else {}
            result.load_s = float(recorded.get("load_s", 0.0))
            result.index_build_s = float(recorded.get("index_build_s", 0.0))
            result.notes.append(f"reused an earlier run's collection; load/build times as recorded then: {recorded}")
            return _milvus_sweep(client, name, data, ef_sweep, result, rss_before, uri)
        client.close()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    client = MilvusClient(uri=uri)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("tag", DataType.INT64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=data.dimension)
    client.create_collection(name, schema=schema, consistency_level="Strong")
    started = time.perf_counter()
    batch = 5000
    for start in range(0, data.n, batch):
        stop = min(data.n, start + batch)
        rows = [{"id": i, "tag": int(data.tags[i]), "vector": data.vectors[i]} for i in range(start, stop)]
        client.insert(name, rows)
    client.flush(name)
    result.load_s = time.perf_counter() - started
    index = dict(settings.VITRINE_MILVUS_INDEX)
    params = client.prepare_index_params()
    params.add_index(field_name="vector", index_type=index.get("index_type", "HNSW"), metric_type="COSINE",
                     params=index.get("params", {}))  # fmt: skip
    started = time.perf_counter()
    try:
        client.create_index(name, params)
    except MilvusException as exc:
        # A build of many minutes can outlive the gRPC keepalive ("too_many_pings"); pymilvus then
        # retries a call the server had finished. The index is there: carry on.
        if "already exists" not in str(exc):
            raise
    client.load_collection(name)
    result.index_build_s = time.perf_counter() - started
    timings.write_text(json.dumps({"load_s": result.load_s, "index_build_s": result.index_build_s, "n": data.n}))
    return _milvus_sweep(client, name, data, ef_sweep, result, rss_before, uri)


def _milvus_sweep(client: Any, name: str, data: Dataset, ef_sweep: Sequence[int], result: StoreResult,
                  rss_before: int, uri: str) -> StoreResult:  # fmt: skip
    index = dict(settings.VITRINE_MILVUS_INDEX)
    result.memory_bytes_per_vector = max(0, _rss_bytes() - rss_before) / data.n
    result.disk_bytes_per_vector = _tree_bytes(Path(uri)) / data.n
    described = client.describe_index(name, "vector")
    result.notes.append(f"index {described.get('index_type')} {index.get('params')}; milvus-lite builds it per "
                        "segment (≤100k rows) with FAISS, filters via ID selectors")  # fmt: skip

    def searcher(filtered: bool, ef: int) -> Callable[[np.ndarray], list[int]]:
        def search(query: np.ndarray) -> list[int]:
            hits = client.search(name, data=[query.tolist()], limit=K, filter="tag == 0" if filtered else "",
                                 search_params={"metric_type": "COSINE", "params": {"ef": max(ef, K)}})  # fmt: skip
            return [int(h["id"]) for h in hits[0]]

        return search

    try:
        for ef in ef_sweep:
            result.sweep.append(_measure(searcher(False, ef), data.queries, data.truth, ef))
            result.sweep_filtered.append(_measure(searcher(True, ef), data.queries, data.truth_filtered, ef))
    finally:
        client.close()
    return result


# --- the run --------------------------------------------------------------------------------------------


def run(*, stores: Sequence[str], n: int, dimension: int, queries: int, selectivity: float, target: float = 0.95,
        ef_sweep: Sequence[int] = EF_SWEEP, exact_queries: int = 50, json_path: Path | None = None,
        log: Callable[[str], None] = print, reuse_milvus: bool = False,
        graph: Graph = Graph()) -> dict[str, Any]:  # fmt: skip
    """Run the benchmark for ``stores``; writes the JSON after every store, so a long run that is cut
    short still leaves what it measured."""
    unknown = set(stores) - set(STORES)
    if unknown:
        raise ValueError(f"unknown store(s) {sorted(unknown)}; choose from {', '.join(STORES)}")
    started = time.perf_counter()
    data = make_dataset(n=n, dimension=dimension, queries=queries, selectivity=selectivity)
    log(f"dataset: {n} × {dimension}-d clustered vectors, {queries} queries, exact top-{K} in "
        f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    figures: dict[str, Any] = {"n": n, "dimension": dimension, "queries": queries, "k": K,
                               "filter_selectivity": selectivity, "recall_target": target, "cores": os.cpu_count(),
                               "pgvector_hnsw": {"m": graph.m, "ef_construction": graph.ef_construction},
                               "client": "one sequential client; latency per query, QPS = queries / wall time",
                               "stores": {}}  # fmt: skip

    def save(result: StoreResult) -> None:
        figures["stores"][result.store] = _as_dict(result, target)
        log(format_row(figures["stores"][result.store]))
        if json_path:
            json_path.write_text(json.dumps(figures, indent=2))

    load_s = 0.0
    if {"exact", "pgvector", "halfvec"} & set(stores):
        load_s = _pg_load(data)
        log(f"postgres: {n} rows by binary COPY in {load_s:.1f} s")
    for store in stores:
        if store == "exact":
            result = bench_pg_exact(data, min(queries, exact_queries))
            result.load_s = load_s
        elif store in ("pgvector", "halfvec"):
            result = bench_pg_hnsw("vector" if store == "pgvector" else "halfvec", data, load_s, ef_sweep, graph)
        else:
            folder = Path(settings.VITRINE_HOME) / "benchmarks" / "milvus-stores"
            result = bench_milvus(data, ef_sweep, folder, reuse=reuse_milvus)
        save(result)
    if {"exact", "pgvector", "halfvec"} & set(stores):
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
    figures["total_s"] = time.perf_counter() - started
    if json_path:
        json_path.write_text(json.dumps(figures, indent=2))
    return figures


def _point(p: Point | None) -> dict[str, Any] | None:
    return None if p is None else {"ef": p.ef, "recall": p.recall, "p50_ms": p.p50_ms, "p95_ms": p.p95_ms,
                                   "qps": p.qps}  # fmt: skip


def _as_dict(result: StoreResult, target: float) -> dict[str, Any]:
    return {
        "store": result.store, "load_s": result.load_s, "index_build_s": result.index_build_s,
        "disk_bytes_per_vector": result.disk_bytes_per_vector,
        "memory_bytes_per_vector": result.memory_bytes_per_vector, "notes": result.notes,
        "sweep": [_point(p) for p in result.sweep], "sweep_filtered": [_point(p) for p in result.sweep_filtered],
        "at_target": _point(result.operating_point(target)),
        "at_target_filtered": _point(result.operating_point(target, filtered=True)),
    }  # fmt: skip


HEADER = ("store", "load s", "build s", "disk B/vec", "mem B/vec", "ef", "recall@10", "p50 ms", "p95 ms", "QPS",
          "| filtered: ef", "recall@10", "p95 ms", "QPS")  # fmt: skip


def _qps(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _cells(point: dict[str, Any] | None, sweep: list[dict[str, Any]], full: bool) -> list[str]:
    """The operating point; when no swept ef reaches the target, the best point, marked as such."""
    marker = ""
    if point is None:
        point = max(sweep, key=lambda p: p["recall"])
        marker = " (best; target not reached)"
    ef = "-" if point["ef"] is None else str(point["ef"])
    cells = [ef, f"{point['recall']:.3f}{marker}"]
    if full:
        cells.append(f"{point['p50_ms']:.2f}")
    return [*cells, f"{point['p95_ms']:.2f}", _qps(point["qps"])]


def format_row(row: dict[str, Any]) -> str:
    cells = [row["store"], f"{row['load_s']:.1f}", f"{row['index_build_s']:.1f}", f"{row['disk_bytes_per_vector']:.0f}",
             f"{row['memory_bytes_per_vector']:.0f}"]  # fmt: skip
    return " | ".join(cells + _cells(row["at_target"], row["sweep"], True)
                      + _cells(row["at_target_filtered"], row["sweep_filtered"], False))  # fmt: skip


def format_table(figures: dict[str, Any]) -> Iterator[str]:
    """A Markdown table of the operating points (recall@10 ≥ target), then every sweep."""
    yield "| " + " | ".join(h.lstrip("| ") for h in HEADER) + " |"
    yield "|" + "---|" * len(HEADER)
    for row in figures["stores"].values():
        yield "| " + format_row(row) + " |"
    yield ""
    yield "| store | ef | recall@10 | p50 ms | p95 ms | QPS | filtered recall@10 | filtered p95 ms | filtered QPS |"
    yield "|---|---|---|---|---|---|---|---|---|"
    for row in figures["stores"].values():
        for plain, filtered in zip(row["sweep"], row["sweep_filtered"], strict=True):
            ef = "-" if plain["ef"] is None else plain["ef"]
            yield (f"| {row['store']} | {ef} | {plain['recall']:.3f} | {plain['p50_ms']:.2f} | {plain['p95_ms']:.2f} "
                   f"| {_qps(plain['qps'])} | {filtered['recall']:.3f} | {filtered['p95_ms']:.2f} "
                   f"| {_qps(filtered['qps'])} |")  # fmt: skip
