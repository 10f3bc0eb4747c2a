"""The vector-store benchmark's own arithmetic and a tiny end-to-end run (figures are not asserted: no timing)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from search.lab.benchmarks import stores as benchmarks_stores
from search.lab.benchmarks.stores_data import exact_top_k
from search.lab.benchmarks.synthetic import cluster_centers, clustered_vectors

pytestmark = pytest.mark.django_db(transaction=True)  # CREATE INDEX CONCURRENTLY cannot run in a transaction


def test_exact_top_k_matches_a_full_sort_with_and_without_a_mask():
    rng = np.random.default_rng(4)
    vectors, _ = clustered_vectors(rng, centers=cluster_centers(rng, clusters=5, dimension=8), n=450)
    queries = vectors[:7] + 0.01
    mask = rng.random(len(vectors)) < 0.3
    got = exact_top_k(vectors, queries, 10)
    got_masked = exact_top_k(vectors, queries, 10, mask=mask)
    for q, query in enumerate(queries):
        scores = vectors @ query
        assert got[q] == list(np.argsort(-scores, kind="stable")[:10])
        masked = np.where(mask, scores, -np.inf)
        assert got_masked[q] == list(np.argsort(-masked, kind="stable")[:10])


def test_clustered_vectors_are_unit_length_and_clustered():
    rng = np.random.default_rng(1)
    centers = cluster_centers(rng, clusters=3, dimension=64)
    vectors, cluster = clustered_vectors(rng, centers=centers, n=300)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    own = np.einsum("nd,nd->n", vectors, centers[cluster])
    assert own.min() > 0.5 and (vectors @ centers.T).argmax(axis=1).tolist() == cluster.tolist()


def test_a_small_run_over_every_store_writes_json_and_finds_the_exact_answer(tmp_path, settings):
    """milvus-lite and the embedded Milvus server (of this test's home, stopped at the end) included."""
    from config import embedded_milvus

    settings.VITRINE_HOME = tmp_path
    server = embedded_milvus.milvus(tmp_path)
    out = tmp_path / "stores.json"
    try:
        figures = benchmarks_stores.run(stores=list(benchmarks_stores.STORES), n=3000, dimension=16, queries=20,
                                        selectivity=0.2, ef_sweep=[10, 200], json_path=out,
                                        log=lambda _: None)  # fmt: skip
    finally:
        server.release()  # this process started it: it stops it
    assert not server.is_running()
    assert json.loads(out.read_text())["stores"].keys() == set(benchmarks_stores.STORES)
    stores = figures["stores"]
    assert stores["exact"]["at_target"]["recall"] == 1.0 and stores["exact"]["at_target_filtered"]["recall"] == 1.0
    for name in ("pgvector", "halfvec", "milvus", "milvus-server"):
        row = stores[name]
        assert [p["ef"] for p in row["sweep"]] == [10, 200]
        assert row["sweep"][-1]["recall"] >= 0.9, name  # a wide search over 3,000 vectors is near exact
        assert row["disk_bytes_per_vector"] > 16 * 2 and row["index_build_s"] > 0
        assert not any("did not use the index" in note for note in row["notes"]), row["notes"]
    assert stores["halfvec"]["memory_bytes_per_vector"] < stores["pgvector"]["memory_bytes_per_vector"]
    lines = list(benchmarks_stores.format_table(figures))
    # Operating points (a row per store), then the sweeps (two rows per store but the exact scan's one).
    stored = len(benchmarks_stores.STORES)
    assert lines[0].startswith("| store |") and len(lines) == 2 + stored + 1 + 2 + (1 + (stored - 1) * 2)
