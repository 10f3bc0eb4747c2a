"""The vector-store benchmark on Milvus: the shop's collection layout and index settings, in milvus-lite
(``milvus``) or on the embedded Milvus standalone server of VITRINE_HOME (``milvus-server``,
:mod:`config.embedded_milvus`)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from config.embedded_milvus import EmbeddedMilvus
from search.lab.benchmarks.stores_data import Dataset, K, StoreResult, measure, measure_concurrent

# --- Milvus ---------------------------------------------------------------------------------------------


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _rss_bytes(server: EmbeddedMilvus | None = None) -> int:
    """Resident memory of this process and its children (milvus-lite may serve from either), or of the server."""
    import psutil

    if server is not None:
        state = server._state()
        return int(psutil.Process(int(str(state["pid"]))).memory_info().rss) if state else 0
    me = psutil.Process()
    return int(me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True)))


def _disk_bytes(uri: str, server: EmbeddedMilvus | None) -> int:
    return (
        _tree_bytes(server.root / "data") + _tree_bytes(server.root / "rocksmq") if server else _tree_bytes(Path(uri))
    )


def _reusable(client: Any, name: str, n: int) -> bool:
    """A complete, indexed collection of ``n`` rows from an earlier run of the same dataset."""
    if not client.has_collection(name) or not client.list_indexes(name):
        return False
    client.load_collection(name)
    return int(client.get_collection_stats(name).get("row_count", 0)) == n


def bench_milvus(data: Dataset, ef_sweep: Sequence[int], folder: Path, reuse: bool = False,
                 server: EmbeddedMilvus | None = None, clients: Sequence[int] = (),
                 target: float = 0.95) -> StoreResult:  # fmt: skip
    """``reuse``: keep a collection an interrupted run loaded and indexed (same seed, same N) and measure
    its searches; its load and build times are then those recorded in ``folder/timings.json``.
    ``server``: the embedded Milvus server (running) instead of a milvus-lite file."""
    from pymilvus import DataType, MilvusClient, MilvusException

    result = StoreResult(store="milvus-server" if server else "milvus")
    uri = server.uri if server else str(folder / "bench.db")
    token = server.token if server else ""
    timings = folder / "timings.json"
    name = "bench_store_vectors"
    if server and not reuse:
        dropper = MilvusClient(uri=uri, token=token)
        if dropper.has_collection(name):
            dropper.drop_collection(name)
        dropper.close()
    rss_before, disk_before = _rss_bytes(server), _disk_bytes(uri, server) if server else 0
    if reuse and (server or Path(uri).exists()):
        client = MilvusClient(uri=uri, token=token)
        if _reusable(client, name, data.n):
            recorded = json.loads(timings.read_text()) if timings.exists() else {}
            result.load_s = float(recorded.get("load_s", 0.0))
            result.index_build_s = float(recorded.get("index_build_s", 0.0))
            result.notes.append(f"reused an earlier run's collection; load/build times as recorded then: {recorded}")
            return _milvus_sweep(client, name, data, ef_sweep, result, (rss_before, disk_before), uri, server, clients,
                         target)  # fmt: skip
        client.close()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    client = MilvusClient(uri=uri, token=token)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("tag", DataType.INT64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=data.dimension)
    # The shop's level on the server (Strong costs ~200 ms a search there); milvus-lite as before.
    client.create_collection(name, schema=schema, consistency_level="Session" if server else "Strong")
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
    return _milvus_sweep(client, name, data, ef_sweep, result, (rss_before, disk_before), uri, server, clients,
                         target)  # fmt: skip


def _milvus_sweep(client: Any, name: str, data: Dataset, ef_sweep: Sequence[int], result: StoreResult,
                  before: tuple[int, int], uri: str, server: EmbeddedMilvus | None = None,
                  clients: Sequence[int] = (), target: float = 0.95) -> StoreResult:  # fmt: skip
    index = dict(settings.VITRINE_MILVUS_INDEX)
    result.memory_bytes_per_vector = max(0, _rss_bytes(server) - before[0]) / data.n
    result.disk_bytes_per_vector = max(0, _disk_bytes(uri, server) - before[1]) / data.n
    described = client.describe_index(name, "vector")
    if server:
        result.notes.append(f"index {described.get('index_type')} {index.get('params')}; Milvus 2.3.5 standalone "
                            "(embedded server: etcd, RocksMQ, local storage), Session consistency; memory = the "
                            "server process's RSS growth")  # fmt: skip
    else:
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
            result.sweep.append(measure(searcher(False, ef), data.queries, data.truth, ef))
            result.sweep_filtered.append(measure(searcher(True, ef), data.queries, data.truth_filtered, ef))
        point = result.operating_point(target) or (result.sweep[-1] if result.sweep else None)
        if point is not None and point.ef is not None and clients:
            result.concurrent_ef = ef = point.ef
            for count in clients:  # one client object: pymilvus's gRPC channel serves the threads
                result.concurrent_qps[count] = measure_concurrent(lambda: searcher(False, ef), data.queries,
                                                                  count)  # fmt: skip
    finally:
        client.close()
    return result
