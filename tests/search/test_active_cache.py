"""Active versions cached per process, and still correct when another process switches a version.

The other process is real: a separate Python process on the test database activates a new version of the image
space, as a worker does when a reindex completes (and drops the old version's vectors). This process keeps its
cache (the TTL is an hour here) and must answer from the new version anyway, for several rounds, by look and by
look and words together.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from search.indexing import bulk, versions
from search.querying import similar
from search.querying.active import active_state
from search.vectorstores import get_store
from tests.factories import CategoryFactory, ProductFactory, add_image
from tests.search.workers import ROOT

DIM = 16

ACTIVATE = """
import sys, django, numpy as np
django.setup()
from catalog.models import ProductImage
from search.indexing import versions
from search.vectorstores import get_store
version, seed = sys.argv[1], int(sys.argv[2])
ids = sorted(ProductImage.objects.values_list("pk", flat=True))
vectors = np.random.default_rng(seed).normal(size=(len(ids), {dim})).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
versions.version_register(space="pixels", version=version, dimension={dim})
get_store().upsert_images(space="pixels", version=version, items=list(zip(ids, vectors)))
print("activated", versions.version_activate_if_complete(space="pixels").version)
""".replace("{dim}", str(DIM))


def _vectors(seed: int, n: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _activate_elsewhere(version: str, seed: int) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
           "VITRINE_DB_NAME": connection.settings_dict["NAME"], "VITRINE_ENABLED_SPACES": "pixels,text"}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", ACTIVATE, version, str(seed)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and f"activated {version}" in result.stdout, result.stderr[-3000:]


@pytest.fixture
def shop(use_spaces, settings):  # type: ignore[no-untyped-def]
    use_spaces("pixels", "text")
    settings.VITRINE_PRIMARY_IMAGE_SPACE = settings.VITRINE_FALLBACK_IMAGE_SPACE = "pixels"
    settings.VITRINE_ACTIVE_CACHE_S = 3600  # only invalidation can make this process see a new version
    category = CategoryFactory(name="Mugs")
    products = []
    for i in range(8):
        product = ProductFactory(category=category, title=f"Enamel mug no. {i}", description="A mug for tea")
        add_image(product, color=(200 - 20 * i, 40 + 15 * i, 30), size=(32, 32))
        products.append(product)
    bulk.images_embed_bulk(space="pixels")
    bulk.products_embed_bulk(space="text")
    return products


def _exact_image_order(products: list, seed: int, query: int, k: int) -> list[int]:  # type: ignore[type-arg]
    """Brute force over the vectors the other process wrote (one image per product, ids in product order)."""
    vectors = _vectors(seed, len(products))
    scores = vectors @ vectors[query]
    order = [i for i in np.argsort(-scores, kind="stable") if i != query][:k]
    return [products[i].pk for i in order]


@pytest.mark.django_db(transaction=True)
def test_a_version_activated_by_another_process_is_read_at_once_despite_the_cache(shop):
    before = similar.similar_products(product=shop[0], k=3, space="pixels")
    assert len(before) == 3 and active_state().versions["pixels"].version == "pixels-32x32-v1"
    for round_, (version, seed) in enumerate([("cache-v2", 2), ("cache-v3", 3), ("cache-v4", 4)]):
        _activate_elsewhere(version, seed)  # ... and the old version's vectors are dropped
        stale = active_state().versions["pixels"].version
        assert stale != version, "this process still has the old version cached"
        if round_ % 2 == 0:  # by look alone
            got = [h.product_id for h in similar.similar_products(product=shop[0], k=3, space="pixels")]
            assert got == _exact_image_order(shop, seed, 0, 3)
        else:  # look and words: its image half must come from the new version too
            got = [h.product_id for h in similar.similar_products(product=shop[0], k=5, space="hybrid")]
            versions_now = active_state().versions
            assert versions_now["pixels"].version == version
            fresh = similar.similar_products(product=shop[0], k=5, ranking=similar.similar_ranking("hybrid"))
            assert got == [h.product_id for h in fresh]
            images = get_store().similar_candidates(
                product_id=shop[0].pk, image=_ref(versions_now["pixels"]), text=_ref(versions_now["text"]), pool=40
            )
            assert images.query_image  # the new version holds the viewed product's image
        assert active_state().versions["pixels"].version == version


def _ref(version):  # type: ignore[no-untyped-def]
    from search.vectorstores.base import VersionRef

    return VersionRef(version.space, version.version, version.dimension)


@pytest.mark.django_db
def test_this_process_reads_a_version_it_activated_itself_without_waiting(shop):
    similar.similar_products(product=shop[0], k=3, space="pixels")
    ids = [p.images.get().pk for p in shop]
    versions.version_register(space="pixels", version="local-v2", dimension=DIM)
    get_store().upsert_images(
        space="pixels", version="local-v2", items=list(zip(ids, _vectors(7, len(ids)), strict=True))
    )
    assert versions.version_activate_if_complete(space="pixels") is not None
    assert active_state().versions["pixels"].version == "local-v2"
    got = [h.product_id for h in similar.similar_products(product=shop[0], k=3, space="pixels")]
    assert got == _exact_image_order(shop, 7, 0, 3)


@pytest.mark.django_db
def test_a_first_text_version_turns_hybrid_on_in_this_process(use_spaces, settings):
    use_spaces("pixels", "text")
    settings.VITRINE_PRIMARY_IMAGE_SPACE = settings.VITRINE_FALLBACK_IMAGE_SPACE = "pixels"
    settings.VITRINE_ACTIVE_CACHE_S = 3600
    product = ProductFactory(title="Enamel mug")
    add_image(product, size=(16, 16))
    bulk.images_embed_bulk(space="pixels")
    assert similar.similar_ranking().space == "pixels"  # cached: no text vectors yet
    bulk.products_embed_bulk(space="text")  # registers the text space's first version, active at once
    assert similar.similar_ranking().space == "hybrid"


@pytest.mark.django_db
def test_a_warm_similar_request_asks_nothing_about_versions(client, shop):
    url = f"/api/products/{shop[0].pk}/similar"
    assert client.get(url).status_code == 200  # loads the cache
    for space in ("pixels", "hybrid"):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, {"space": space, "k": "4"})
        assert response.status_code == 200 and len(response.json()["results"]) == 4
        sql = " ".join(q["sql"] for q in queries.captured_queries)
        assert "search_spaceversion" not in sql and "search_spacestate" not in sql
        assert "search_rankingweights" not in sql
        # The product, its neighbours (one statement, both searches for hybrid), their cards with their images.
        assert len(queries.captured_queries) == 3, sql


@pytest.mark.django_db
def test_milvus_finds_nothing_rather_than_failing_once_another_client_dropped_the_version(settings, tmp_path,
                                                                                          use_spaces):  # fmt: skip
    """A web process's Milvus client keeps its collections loaded; the worker that retires a version drops its
    collection through a client of its own. The next search must find nothing (and search then reads the version
    now active), not fail."""
    from search.vectorstores.milvus import MilvusStore

    use_spaces("pixels", "text")
    settings.VITRINE_VECTOR_STORE = "search.vectorstores.milvus.MilvusStore"
    settings.VITRINE_MILVUS_URI = str(tmp_path / "milvus.db")
    get_store.cache_clear()
    products = [ProductFactory() for _ in range(4)]
    ids = [add_image(p, size=(8, 8)).pk for p in products]
    versions.version_register(space="pixels", version="milvus-v1", dimension=DIM)
    reader = get_store()
    reader.upsert_images(space="pixels", version="milvus-v1", items=list(zip(ids, _vectors(1, 4), strict=True)))
    search = {"space": "pixels", "version": "milvus-v1", "dimension": DIM, "vector": _vectors(1, 4)[0], "k": 3}
    assert len(reader.nearest_images(**search)) == 3
    worker = MilvusStore()  # another client, as the worker's would be
    worker.drop_version(space="pixels", version="milvus-v1")
    try:
        assert reader.nearest_images(**search) == []
    finally:
        worker.close()
        reader.close()  # type: ignore[attr-defined]
        get_store.cache_clear()
