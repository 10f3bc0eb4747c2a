"""The load test's in-process vector-search sampler, on each store (figures are not asserted: no timing)."""

from __future__ import annotations

import time

import pytest

from catalog.models import Product
from search.lab.benchmarks.load import VectorSearchSampler
from search.lab.benchmarks.synthetic import seed_synthetic
from search.querying import similar
from search.querying.active import active_forget

pytestmark = pytest.mark.django_db(transaction=True)  # the synthetic seed builds its index concurrently


def test_the_sampler_times_the_searches_behind_both_endpoints_on_each_store(vector_store, settings):
    """On pgvector it also explains the statement (Postgres's own time); on Milvus there is no vector statement to
    explain, and the sampler still times the store call instead of dying on the first sample."""
    settings.VITRINE_ENABLED_SPACES = ["clip", "text"]
    seed_synthetic(count=300, dimension=16, text_dimension=8, clusters=6, categories=3)
    active_forget()
    ids = list(Product.objects.filter(is_active=True).values_list("pk", flat=True)[:50])
    rankings = [similar.similar_ranking(similar.image_space_version().space), similar.similar_ranking()]
    assert rankings[1].text is not None  # hybrid: the text space has vectors
    sampler = VectorSearchSampler(ids=ids, rankings=rankings, pause=0.01)
    sampler.start()
    deadline = time.monotonic() + 60
    while len(sampler.samples.get("hybrid", {}).get("store_call", [])) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    sampler.stop.set()
    sampler.join(timeout=30)
    figures = sampler.figures()
    assert figures["image"]["samples"] >= 3 and figures["hybrid"]["samples"] >= 3, figures
    explained = not vector_store.mirrors_catalog
    for kind in ("image", "hybrid"):
        assert figures[kind]["store_call_p95_ms"] > 0
        assert ("postgres_p95_ms" in figures[kind]) is explained
