"""The vector-store benchmark's data: clustered vectors, held-out queries, exact answers; measuring one store."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from search.lab.benchmarks.synthetic import cluster_centers, clustered_vectors

STORES = ("exact", "pgvector", "halfvec", "milvus", "milvus-server")
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


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None) -> list[list[int]]:
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
    return Dataset(vectors=vectors, tags=tags, queries=held_out, truth=exact_top_k(vectors, held_out, K),
                   truth_filtered=exact_top_k(vectors, held_out, K, mask=tags == 0),
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
    # QPS with 1, 2, 8… concurrent clients (threads, each with its own connection) at ``concurrent_ef``.
    concurrent_qps: dict[int, float] = field(default_factory=dict)
    concurrent_ef: int | None = None

    def operating_point(self, target: float, filtered: bool = False) -> Point | None:
        """The first (cheapest) point of the sweep that reaches the recall target."""
        for point in self.sweep_filtered if filtered else self.sweep:
            if point.recall >= target:
                return point
        return None


def measure(search: Callable[[np.ndarray], list[int]], queries: np.ndarray, truth: list[list[int]],
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


def measure_concurrent(make_search: Callable[[], Callable[[np.ndarray], list[int]]], queries: np.ndarray,
                       clients: int) -> float:  # fmt: skip
    """Queries per second with ``clients`` threads sharing the queries, each with the search ``make_search``
    gives it (its own database connection and settings); the threads' connections are closed afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    parts = [queries[i::clients] for i in range(clients)]

    def run(part: np.ndarray) -> None:
        try:
            search = make_search()
            for query in part[:2]:  # warm this connection; not measured apart (a few of many)
                search(query)
            for query in part:
                search(query)
        finally:
            connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(run, parts))
    return (len(queries) + 2 * clients) / (time.perf_counter() - started)
