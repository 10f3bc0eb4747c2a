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
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from config import embedded_milvus
from search.lab.benchmarks.stores_data import EF_SWEEP, STORES, TABLE, K, Point, StoreResult, make_dataset
from search.lab.benchmarks.stores_milvus import bench_milvus
from search.lab.benchmarks.stores_pgvector import Graph, bench_pg_exact, bench_pg_hnsw, pg_load
from search.vectorstores.pgvector import HNSW_EF_CONSTRUCTION, HNSW_M

__all__ = ["EF_SWEEP", "HNSW_EF_CONSTRUCTION", "HNSW_M", "STORES", "TABLE", "Graph", "K", "format_table", "run"]


# --- the run --------------------------------------------------------------------------------------------


def run(*, stores: Sequence[str], n: int, dimension: int, queries: int, selectivity: float, target: float = 0.95,
        ef_sweep: Sequence[int] = EF_SWEEP, exact_queries: int = 50, json_path: Path | None = None,
        log: Callable[[str], None] = print, reuse_milvus: bool = False,
        graph: Graph | None = None, clients: Sequence[int] = ()) -> dict[str, Any]:  # fmt: skip
    """Run the benchmark for ``stores``; writes the JSON after every store, so a long run that is cut
    short still leaves what it measured. ``graph``: the HNSW build parameters (the shop's by default)."""
    graph = graph or Graph()
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
        if result.concurrent_qps:
            log(f"{result.store}: QPS at ef {result.concurrent_ef} (unfiltered) by concurrent clients: "
                + ", ".join(f"{c}: {q:.0f}" for c, q in result.concurrent_qps.items()))  # fmt: skip
        if json_path:
            json_path.write_text(json.dumps(figures, indent=2))

    load_s = 0.0
    if {"exact", "pgvector", "halfvec"} & set(stores):
        load_s = pg_load(data)
        log(f"postgres: {n} rows by binary COPY in {load_s:.1f} s")
    for store in stores:
        if store == "exact":
            result = bench_pg_exact(data, min(queries, exact_queries))
            result.load_s = load_s
        elif store in ("pgvector", "halfvec"):
            result = bench_pg_hnsw("vector" if store == "pgvector" else "halfvec", data, load_s, ef_sweep, graph,
                                   clients, target)  # fmt: skip
        elif store == "milvus-server":
            server = embedded_milvus.milvus(Path(settings.VITRINE_HOME))
            server.ensure_running()
            folder = Path(settings.VITRINE_HOME) / "benchmarks" / "milvus-server"
            result = bench_milvus(data, ef_sweep, folder, reuse=reuse_milvus, server=server, clients=clients,
                                  target=target)  # fmt: skip
        else:
            folder = Path(settings.VITRINE_HOME) / "benchmarks" / "milvus-stores"
            result = bench_milvus(data, ef_sweep, folder, reuse=reuse_milvus, clients=clients, target=target)
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
        "concurrent": {"ef": result.concurrent_ef, "qps_by_clients": result.concurrent_qps},
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
    concurrent = [row for row in figures["stores"].values() if row.get("concurrent", {}).get("qps_by_clients")]
    if concurrent:
        counts = sorted({int(c) for row in concurrent for c in row["concurrent"]["qps_by_clients"]})
        yield ""
        yield (
            "| store | ef (unfiltered) | " + " | ".join(f"QPS, {c} client{'s' if c > 1 else ''}" for c in counts) + " |"
        )
        yield "|---|---|" + "---|" * len(counts)
        for row in concurrent:
            by = {int(c): q for c, q in row["concurrent"]["qps_by_clients"].items()}
            yield (f"| {row['store']} | {row['concurrent']['ef']} | "
                   + " | ".join(_qps(by[c]) if c in by else "-" for c in counts) + " |")  # fmt: skip
