"""Hybrid "Looks similar" (look and words together) through each real vector store, against brute force.

Random vectors in an image space (some products with two images, one with none) and in the text space (one
product without a text vector); the expected answer is the weighted sum of exact cosines computed in numpy over
the same rows, with the documented rules for missing signals, the filters and the exclusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import pytest

from catalog.models import Product
from search.indexing import versions
from search.lab.benchmarks.synthetic import seed_synthetic
from search.models import ImageEmbedding, ProductEmbedding, RankingWeights
from search.querying import similar
from search.querying.active import active_forget
from search.vectorstores import Filters, VectorStore
from tests.factories import CategoryFactory, ProductFactory, add_image

pytestmark = pytest.mark.django_db

IMAGE, TEXT, DIM = ("cnn", "hybrid-img-v1"), ("text", "hybrid-txt-v1"), 8
NO_IMAGE, NO_TEXT, HIDDEN = 7, 11, 13  # product indices with a signal missing, and an unpublished one


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@dataclass
class Shop:
    products: list = field(default_factory=list)
    images: dict[int, list[tuple[int, np.ndarray]]] = field(default_factory=dict)  # product id -> (image id, vector)
    texts: dict[int, np.ndarray] = field(default_factory=dict)  # product id -> text vector

    def product(self, i: int):  # type: ignore[no-untyped-def]
        return self.products[i]

    def expected(self, i: int, k: int, filters: Filters | None = None, weights: tuple[float, float] = (0.5, 0.5),
                 ) -> list[tuple[int, float]]:  # fmt: skip
        """(product id, score), best first: the module docstring of search.querying.hybrid, in numpy."""
        query = self.products[i]
        own_images, own_text = self.images.get(query.pk), self.texts.get(query.pk)
        q_image = own_images[0][1] if own_images else None
        w_image = weights[0] if q_image is not None else 0.0
        w_text = weights[1] if own_text is not None else 0.0
        rows = []
        for p in self.products:
            p.refresh_from_db()
            if p.pk == query.pk or not p.is_active or not _passes(p, filters):
                continue
            image = max((float(v @ q_image) for _, v in self.images.get(p.pk, [])), default=None) if w_image else None
            text = float(self.texts[p.pk] @ own_text) if w_text and p.pk in self.texts else None
            if image is None and text is None:
                continue  # found by neither search
            rows.append((p.pk, image, text))
        image_floor = min((r[1] for r in rows if r[1] is not None), default=0.0)
        text_floor = min((r[2] for r in rows if r[2] is not None), default=0.0)
        scored = [(pk, w_image * (image_floor if image is None else image) + w_text * (text_floor if text is None
                   else text)) for pk, image, text in rows]  # fmt: skip
        return sorted(scored, key=lambda r: (-r[1], r[0]))[:k]


def _passes(product, filters: Filters | None) -> bool:  # type: ignore[no-untyped-def]
    if filters is None:
        return True
    path = product.category.path if product.category else ""
    if filters.category_path and not (path == filters.category_path or path.startswith(filters.category_path + "/")):
        return False
    if filters.price_min is not None and (product.price is None or product.price < filters.price_min):
        return False
    if filters.price_max is not None and (product.price is None or product.price > filters.price_max):
        return False
    return not (filters.in_stock and product.stock <= 0)


@pytest.fixture
def shop(vector_store: VectorStore, use_spaces, settings) -> Shop:  # type: ignore[no-untyped-def]
    use_spaces("cnn", "text")
    settings.VITRINE_PRIMARY_IMAGE_SPACE = settings.VITRINE_FALLBACK_IMAGE_SPACE = "cnn"
    shoes = CategoryFactory(name="Shoes", slug="shoes")
    categories = [shoes, CategoryFactory(name="Boots", slug="boots", parent=shoes), CategoryFactory(name="Hats")]
    rng = np.random.default_rng(5)
    shop = Shop()
    image_rows, text_rows = [], []
    for i in range(30):
        product = ProductFactory(category=categories[i % 3], price=Decimal(i + 1), stock=0 if i % 4 == 0 else 2,
                                 is_active=i != HIDDEN)  # fmt: skip
        shop.products.append(product)
        n_images = 0 if i == NO_IMAGE else (2 if i % 5 == 0 else 1)
        for vector in _unit(rng, n_images):
            image = add_image(product, color=(i * 7 % 255, 60, 90), size=(8, 8))
            shop.images.setdefault(product.pk, []).append((image.pk, vector))
            image_rows.append((image.pk, vector))
        if i != NO_TEXT:
            shop.texts[product.pk] = _unit(rng, 1)[0]
            text_rows.append((product.pk, shop.texts[product.pk], "hash"))
    versions.version_register(space=IMAGE[0], version=IMAGE[1], dimension=DIM)
    versions.version_register(space=TEXT[0], version=TEXT[1], dimension=DIM)
    vector_store.upsert_images(space=IMAGE[0], version=IMAGE[1], items=image_rows)
    vector_store.upsert_products(space=TEXT[0], version=TEXT[1], items=text_rows)
    return shop


def _hybrid(shop: Shop, i: int, k: int, filters: Filters | None = None) -> list[tuple[int, float]]:
    hits = similar.similar_products(product=shop.product(i), k=k, space="hybrid", filters=filters)
    assert len({h.product_id for h in hits}) == len(hits), "one entry per product"
    assert shop.product(i).pk not in {h.product_id for h in hits}, "the product itself is excluded"
    return [(h.product_id, h.score) for h in hits]


def _same(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [pk for pk, _ in got] == [pk for pk, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-5)


FILTERS = [None, Filters(category_path="shoes"), Filters(price_min=Decimal("5"), price_max=Decimal("20")),
           Filters(in_stock=True), Filters(category_path="shoes/boots", in_stock=True)]  # fmt: skip


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: "none" if f is None else repr(f)[8:60])
def test_hybrid_is_the_weighted_sum_of_exact_cosines_under_filters(shop, filters):
    assert similar.similar_ranking().space == "hybrid"  # the default once the text space has vectors
    for i in (0, 1, 4, 22):
        got = _hybrid(shop, i, 12, filters)
        expected = shop.expected(i, 12, filters)
        _same(got, expected)
        assert len(got) == min(12, len(shop.expected(i, 100, filters)))  # k whenever k exist


def test_missing_signals_are_reweighted_or_floored_never_zero(shop):
    # The viewed product has no text vector: the image alone ranks, as the image space would.
    got = _hybrid(shop, NO_TEXT, 12)
    _same(got, shop.expected(NO_TEXT, 12))
    image_only = similar.similar_products(product=shop.product(NO_TEXT), k=12, space="cnn")
    assert [pk for pk, _ in got] == [h.product_id for h in image_only]
    # The viewed product has no image: its words alone still find neighbours.
    _same(_hybrid(shop, NO_IMAGE, 12), shop.expected(NO_IMAGE, 12))
    # A candidate without a text vector scores the pool's weakest text cosine, not 0.
    full = dict(_hybrid(shop, 2, 40))
    lacking = shop.product(NO_TEXT).pk
    q_image = shop.images[shop.product(2).pk][0][1]
    texts = [float(v @ shop.texts[shop.product(2).pk]) for pk, v in shop.texts.items()
             if pk in full and pk != lacking]  # fmt: skip
    image = max(float(v @ q_image) for _, v in shop.images[lacking])
    assert full[lacking] == pytest.approx(0.5 * image + 0.5 * min(texts), abs=1e-5)
    assert full[lacking] != pytest.approx(0.5 * image, abs=1e-3)


def test_a_product_with_no_vector_at_all_is_not_indexed_yet(shop):
    fresh = ProductFactory(category=shop.product(0).category)
    add_image(fresh, size=(8, 8))
    with pytest.raises(similar.NotIndexed):
        similar.similar_products(product=fresh, k=5, space="hybrid")


def test_tuned_weights_are_used_from_the_next_search(shop):
    before = _hybrid(shop, 3, 10)
    _same(before, shop.expected(3, 10))
    RankingWeights.objects.create(image_space="cnn", image_version=IMAGE[1], text_space="text", text_version=TEXT[1],
                                  image_weight=0.2, text_weight=0.8, k=5, precision=0.5, best_single_space="text",
                                  best_single_precision=0.4, folds=2, queries=10)  # fmt: skip
    active_forget()  # what `evaluate --tune` does once its row is committed
    _same(_hybrid(shop, 3, 10), shop.expected(3, 10, weights=(0.2, 0.8)))


def test_products_with_many_images_still_give_k_results(vector_store, use_spaces, settings):
    """An image search fills its pool with a few products' many images: hybrid asks again, wider, until k."""
    use_spaces("cnn", "text")
    settings.VITRINE_PRIMARY_IMAGE_SPACE = settings.VITRINE_FALLBACK_IMAGE_SPACE = "cnn"
    rng = np.random.default_rng(9)
    base = _unit(rng, 1)[0]
    query = ProductFactory()
    rows = [(add_image(query, size=(8, 8)).pk, base)]
    crowded = []
    for _ in range(4):  # 20 near-copies each: the 40 nearest images belong to two products
        product = ProductFactory()
        crowded.append(product.pk)
        for _ in range(20):
            near = base + 0.05 * _unit(rng, 1)[0]
            rows.append((add_image(product, size=(8, 8)).pk, near / np.linalg.norm(near)))
    versions.version_register(space=IMAGE[0], version=IMAGE[1], dimension=DIM)
    versions.version_register(space=TEXT[0], version=TEXT[1], dimension=DIM)
    vector_store.upsert_images(space=IMAGE[0], version=IMAGE[1], items=rows)
    vector_store.upsert_products(space=TEXT[0], version=TEXT[1], items=[(query.pk, base, "hash")])
    hits = similar.similar_products(product=query, k=3, space="hybrid")
    assert len(hits) == 3 and {h.product_id for h in hits} <= set(crowded)


def test_the_synthetic_seed_with_text_vectors_serves_hybrid(vector_store, use_spaces, settings):
    """``benchmark --seed-synthetic N --text-dim D``: a text vector per product, indexed, and hybrid over both
    matches brute force (every product has both signals, default weights)."""
    use_spaces("clip", "text")
    seeded = seed_synthetic(count=300, dimension=DIM, space="clip", clusters=6, categories=3, text_dimension=6)
    assert seeded["text"]["version"] == "synthetic-text-6d"
    images = dict(ImageEmbedding.objects.filter(space="clip").values_list("image__product_id", "vector"))
    texts = dict(ProductEmbedding.objects.filter(space="text").values_list("product_id", "vector"))
    assert len(images) == len(texts) == 300 and similar.similar_ranking().space == "hybrid"
    query = sorted(texts)[42]
    scores = {pk: 0.5 * float(np.dot(images[pk], images[query])) + 0.5 * float(np.dot(texts[pk], texts[query]))
              for pk in texts if pk != query}  # fmt: skip
    expected = sorted(scores, key=lambda pk: (-scores[pk], pk))[:8]
    hits = similar.similar_products(product=Product.objects.get(pk=query), k=8, space="hybrid")
    assert [h.product_id for h in hits] == expected


@pytest.mark.parametrize("vector_store", ["milvus", "milvus-server"], indirect=True)
def test_milvus_runs_the_image_and_the_text_search_at_once_and_either_ones_outage_is_a_503(shop, vector_store,
                                                                                           monkeypatch):  # fmt: skip
    """In the Milvus store the two searches overlap in time (one on a thread of the store's pool), answer as
    brute force does, and a search that cannot be answered is :class:`StoreUnavailable` whichever thread ran it."""
    import threading
    import time

    from search.vectorstores.base import StoreUnavailable

    searched = vector_store._search
    spans: list[tuple[str, float, float]] = []

    def spied(*args, **kwargs):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        time.sleep(0.2)  # long enough that two searches run one after the other could not overlap
        try:
            return searched(*args, **kwargs)
        finally:
            spans.append((threading.current_thread().name, started, time.monotonic()))

    monkeypatch.setattr(vector_store, "_search", spied)
    _same(_hybrid(shop, 4, 12), shop.expected(4, 12))
    assert len(spans) == 2 and len({name for name, _, _ in spans}) == 2
    (_, start_a, end_a), (_, start_b, end_b) = spans
    assert start_a < end_b and start_b < end_a, spans  # the two intervals overlap

    def down(*args, **kwargs):  # type: ignore[no-untyped-def]
        if threading.current_thread().name.startswith("vector-search"):
            raise StoreUnavailable("the Milvus vector store cannot answer: test")
        return searched(*args, **kwargs)

    monkeypatch.setattr(vector_store, "_search", down)
    with pytest.raises(StoreUnavailable):
        _hybrid(shop, 4, 12)
