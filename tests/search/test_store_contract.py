"""One contract, every vector store: the same tests against pgvector and Milvus (a milvus-lite file).

Vectors are random; the expected answers are brute-force numpy cosine over the same
vectors and the same product fields, so a store that filters after the search
(returning fewer than k) or misreads a filter fails here.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse

from catalog import services as catalog_services
from catalog.models import Product, ProductImage
from search.indexing import enqueue, versions
from search.models import ImageEmbedding, ProductEmbedding
from search.querying import similar
from search.vectorstores import Filters, VectorStore
from tests.factories import CategoryFactory, ProductFactory, add_image
from tests.search.workers import take_queued

pytestmark = pytest.mark.django_db

SPACE, VERSION, DIM = "cnn", "contract-v1", 16


@dataclass
class Catalogue:
    images: list[ProductImage]
    vectors: np.ndarray

    def product(self, i: int) -> Product:
        return self.images[i].product

    def attributes(self) -> tuple[np.ndarray, ...]:
        """Per image, read back from Postgres now: product id, category path, price, stock, published."""
        rows = {i.pk: i for i in ProductImage.objects.filter(pk__in=[i.pk for i in self.images]).select_related(
            "product__category")}  # fmt: skip
        ordered = [rows[i.pk] for i in self.images]
        return (
            np.array([i.product_id for i in ordered]),
            np.array([i.product.category.path if i.product.category else "" for i in ordered], dtype=object),
            np.array([np.nan if i.product.price is None else float(i.product.price) for i in ordered]),
            np.array([i.product.stock for i in ordered]),
            np.array([i.product.is_active for i in ordered]),
        )

    def expected(self, query: np.ndarray, k: int, filters: Filters | None = None, exclude: int | None = None,
                 published_only: bool = True) -> list[int]:  # fmt: skip
        product_of, paths, prices, stock, active = self.attributes()
        mask = np.ones(len(self.images), dtype=bool)
        if published_only:
            mask &= active
        if exclude is not None:
            mask &= product_of != exclude
        if filters is not None:
            if filters.category_path:
                path = filters.category_path
                mask &= np.array([p == path or p.startswith(path + "/") for p in paths])
            if filters.price_min is not None:
                mask &= prices >= float(filters.price_min)
            if filters.price_max is not None:
                mask &= prices <= float(filters.price_max)
            if filters.in_stock:
                mask &= stock > 0
        scores = np.where(mask, self.vectors @ query, -np.inf)
        order = [i for i in np.argsort(-scores, kind="stable") if mask[i]]
        return [self.images[i].pk for i in order[:k]]


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _catalogue(store: VectorStore, n: int = 48, seed: int = 3) -> Catalogue:
    """Shoes (with Boots below it), Shoestrings (a name that shares the prefix) and Hats; prices 1..n
    (one without), every third product out of stock, one in eight hidden; one image each."""
    shoes = CategoryFactory(name="Shoes", slug="shoes")
    boots = CategoryFactory(name="Boots", slug="boots", parent=shoes)
    strings = CategoryFactory(name="Shoestrings", slug="shoestrings")
    hats = CategoryFactory(name="Hats", slug="hats")
    categories = [shoes, boots, strings, hats]
    images = []
    for i in range(n):
        price = None if i == 10 else Decimal(i + 1)  # "price on request": fails every price bound
        product = ProductFactory(category=categories[i % 4], price=price, stock=0 if i % 3 == 0 else 5,
                                 is_active=i % 8 != 7)  # fmt: skip
        images.append(add_image(product, color=(i * 5 % 255, 40, 90)))
    vectors = _unit(np.random.default_rng(seed), n)
    versions.version_register(space=SPACE, version=VERSION, dimension=DIM)
    store.upsert_images(space=SPACE, version=VERSION, items=list(zip([i.pk for i in images], vectors, strict=True)))
    return Catalogue(images=images, vectors=vectors)


def _search(store: VectorStore, query: np.ndarray | None, k: int, **kwargs: object) -> list[int]:
    hits = store.nearest_images(space=SPACE, version=VERSION, dimension=DIM, vector=query, k=k, **kwargs)  # type: ignore[arg-type]
    distances = [h.distance for h in hits]
    assert distances == sorted(distances), "best first"
    return [h.image_id for h in hits]


FILTERS = [
    None,
    Filters(category_path="shoes"),  # Shoes and Boots, not Shoestrings
    Filters(category_path="shoes/boots"),
    Filters(price_min=Decimal("10"), price_max=Decimal("30")),
    Filters(in_stock=True),
    Filters(category_path="hats", price_max=Decimal("40"), in_stock=True),
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: "none" if f is None else repr(f)[8:60])
def test_nearest_images_match_brute_force_cosine_under_filters(vector_store, filters):
    catalogue = _catalogue(vector_store)
    rng = np.random.default_rng(11)
    for _ in range(5):
        query = _unit(rng, 1)[0]
        assert _search(vector_store, query, 8, filters=filters) == catalogue.expected(query, 8, filters)
    hits = vector_store.nearest_images(space=SPACE, version=VERSION, dimension=DIM, vector=query, k=3)
    exact = np.sort(catalogue.vectors @ query)[::-1]
    assert hits[0].score == pytest.approx(exact[0], abs=1e-5)  # scores are cosine similarities


def test_exclusion_unpublished_and_like_product(vector_store):
    catalogue = _catalogue(vector_store)
    product = catalogue.product(4)
    own = catalogue.vectors[4]
    got = _search(vector_store, None, 6, like_product_id=product.pk, exclude_product_id=product.pk)
    assert got == catalogue.expected(own, 6, exclude=product.pk)
    assert catalogue.images[4].pk not in got
    # Hidden products show only when asked for.
    all_images = _search(vector_store, own, 48, published_only=False)
    assert sorted(all_images) == sorted(i.pk for i in catalogue.images)
    assert len(_search(vector_store, own, 48)) == 42
    with pytest.raises(LookupError):
        _search(vector_store, None, 5, like_product_id=ProductFactory().pk)


def test_upsert_is_idempotent_and_replaces_the_vector(vector_store):
    catalogue = _catalogue(vector_store, n=12)
    image = catalogue.images[0]
    new = -catalogue.vectors[0]
    for _ in range(2):
        vector_store.upsert_images(space=SPACE, version=VERSION, items=[(image.pk, new)])
    assert ImageEmbedding.objects.filter(image=image, space=SPACE, model_version=VERSION).count() == 1
    hits = vector_store.nearest_images(space=SPACE, version=VERSION, dimension=DIM, vector=new, k=50,
                                       published_only=False)  # fmt: skip
    assert len(hits) == 12 and len({h.image_id for h in hits}) == 12
    assert hits[0].image_id == image.pk and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_a_large_batch_goes_through_binary_copy_and_stays_idempotent(vector_store):
    """500+ rows take the COPY path (staging table + one upsert); a second load replaces, not duplicates."""
    from search.vectorstores import pgvector

    catalogue = _catalogue(vector_store, n=6)
    ids = [i.pk for i in catalogue.images] * 100  # the same six images, 600 rows: last write wins
    vectors = _unit(np.random.default_rng(5), len(ids))
    assert len(ids) >= pgvector.COPY_THRESHOLD
    vector_store.upsert_images(space=SPACE, version=VERSION, items=list(zip(ids[-6:], vectors[-6:], strict=True)))
    pgvector.images_copy(space=SPACE, version=VERSION, items=list(zip(ids[-6:], vectors[:6], strict=True)))
    stored = dict(ImageEmbedding.objects.filter(space=SPACE, model_version=VERSION).values_list("image_id", "vector"))
    assert len(stored) == 6
    assert np.allclose(stored[ids[-1]], vectors[5], atol=1e-7)


def test_drop_version_removes_vectors_and_index(vector_store):
    catalogue = _catalogue(vector_store, n=8)
    query = catalogue.vectors[0]
    assert _search(vector_store, query, 3)
    vector_store.drop_version(space=SPACE, version=VERSION)
    assert not ImageEmbedding.objects.filter(space=SPACE, model_version=VERSION).exists()
    assert _search(vector_store, query, 3) == []


def test_product_changes_reach_the_store(vector_store, django_capture_on_commit_callbacks, admin_client):
    catalogue = _catalogue(vector_store, n=16)
    rng = np.random.default_rng(2)
    query = _unit(rng, 1)[0]
    cheap = Filters(price_max=Decimal("100"))

    def check() -> None:
        for filters in (cheap, Filters(in_stock=True), Filters(category_path="hats"), None):
            assert _search(vector_store, query, 16, filters=filters) == catalogue.expected(query, 16, filters)

    with django_capture_on_commit_callbacks(execute=True):
        moved = catalogue.product(1)
        moved.price, moved.stock, moved.category = Decimal("500"), 0, catalogue.product(3).category
        moved.save()
        enqueue.products_changed(product_ids=[moved.pk])
    check()
    hidden = [catalogue.product(i).pk for i in (2, 5)]
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:catalog_product_changelist"),
                                     {"action": "make_inactive", "_selected_action": hidden})  # fmt: skip
    assert response.status_code == 302
    check()
    assert not set(_search(vector_store, query, 16)) & {catalogue.images[2].pk, catalogue.images[5].pk}
    with django_capture_on_commit_callbacks(execute=True):
        catalog_services.product_delete(product=catalogue.product(6))
        catalog_services.product_image_delete(image=catalogue.images[8])
    catalogue.images = [i for n, i in enumerate(catalogue.images) if n not in (6, 8)]
    catalogue.vectors = np.delete(catalogue.vectors, [6, 8], axis=0)
    check()
    assert len(_search(vector_store, query, 50, published_only=False)) == 14


def test_a_large_change_reaches_the_store_through_the_worker_in_chunks(
    vector_store, monkeypatch, django_capture_on_commit_callbacks
):
    from search.tasks import products_sync_task

    monkeypatch.setattr(enqueue, "SYNC_INLINE_MAX", 3)
    monkeypatch.setattr(enqueue, "SYNC_TASK_CHUNK", 2)
    catalogue = _catalogue(vector_store, n=5)
    query = _unit(np.random.default_rng(4), 1)[0]
    cheap = Filters(price_max=Decimal("100"))
    before = _search(vector_store, query, 5, filters=cheap)
    assert before
    take_queued()
    ids = sorted(catalogue.product(i).pk for i in range(5))
    with django_capture_on_commit_callbacks(execute=True):
        Product.objects.filter(pk__in=ids).update(price=Decimal("500"))
        enqueue.products_changed(product_ids=ids)
    queued = [args[0] for name, args in take_queued() if name == "search.tasks.products_sync_task"]
    if not vector_store.mirrors_catalog:  # pgvector joins the live rows: nothing to queue, nothing stale
        assert queued == [] and _search(vector_store, query, 5, filters=cheap) == []
        return
    assert _search(vector_store, query, 5, filters=cheap) == before  # not synced in the request
    assert queued == [ids[0:2], ids[2:4], ids[4:5]]
    for chunk in queued:  # what the worker runs
        products_sync_task.apply(args=[chunk]).get()
    assert _search(vector_store, query, 5, filters=cheap) == catalogue.expected(query, 5, cheap) == []


def test_rebuild_command_reloads_the_store_from_postgres(vector_store):
    catalogue = _catalogue(vector_store, n=20)
    # A bulk update that no hook saw: the store's copy (Milvus) is stale until the rebuild.
    Product.objects.filter(pk__in=[catalogue.product(i).pk for i in range(0, 20, 2)]).update(stock=0)
    out = StringIO()
    call_command("vectorstore_rebuild", "--space", SPACE, stdout=out)
    assert f"{SPACE} {VERSION}: 20 vectors in the store" in out.getvalue()
    query = catalogue.vectors[7]
    for filters in (Filters(in_stock=True), None):
        assert _search(vector_store, query, 10, filters=filters) == catalogue.expected(query, 10, filters)


def test_switching_store_is_a_setting_and_a_rebuild(settings, tmp_path):
    """Vectors written under pgvector are served by Milvus after ``vectorstore_rebuild``, and back."""
    from search.vectorstores import get_store

    settings.VITRINE_VECTOR_STORE = "search.vectorstores.pgvector.PgVectorStore"
    get_store.cache_clear()
    catalogue = _catalogue(get_store(), n=12)
    settings.VITRINE_VECTOR_STORE = "search.vectorstores.milvus.MilvusStore"
    settings.VITRINE_MILVUS_URI = str(tmp_path / "switch.db")
    get_store.cache_clear()
    milvus = get_store()
    try:
        query = catalogue.vectors[3]
        assert _search(milvus, query, 5) == []  # nothing there yet
        call_command("vectorstore_rebuild", stdout=StringIO())
        assert _search(milvus, query, 5) == catalogue.expected(query, 5)
        product = catalogue.product(3)
        version = similar.image_space_version(SPACE)
        hits = similar.similar_products(product=product, k=4, version=version)
        assert [h.image_id for h in hits] == catalogue.expected(query, 4, exclude=product.pk)
    finally:
        milvus.close()  # type: ignore[attr-defined]
        get_store.cache_clear()


def test_text_space_products_with_filters(vector_store):
    shoes, hats = CategoryFactory(name="Shoes", slug="shoes"), CategoryFactory(name="Hats", slug="hats")
    products = [ProductFactory(category=shoes if i % 2 else hats, price=Decimal(i + 1)) for i in range(20)]
    vectors = _unit(np.random.default_rng(8), 20)
    versions.version_register(space="text", version="contract-text", dimension=DIM)
    items = [(p.pk, v, f"hash-{p.pk}") for p, v in zip(products, vectors, strict=True)]
    vector_store.upsert_products(space="text", version="contract-text", items=items)
    vector_store.upsert_products(space="text", version="contract-text", items=items[:3])  # idempotent
    assert ProductEmbedding.objects.filter(space="text", model_version="contract-text").count() == 20
    query = vectors[5]
    filters = Filters(category_path="shoes", price_min=Decimal("4"))
    got = vector_store.nearest_products(space="text", version="contract-text", dimension=DIM, vector=query, k=5,
                                        filters=filters)  # fmt: skip
    allowed = [i for i, p in enumerate(products) if p.category == shoes and p.price >= 4]
    exact = sorted(allowed, key=lambda i: -float(vectors[i] @ query))[:5]
    assert [pk for pk, _ in got] == [products[i].pk for i in exact]
    assert got[0][1] == pytest.approx(0.0, abs=1e-5)


def test_the_bulk_seed_copies_then_indexes_and_serves_similar_products(vector_store):
    """``seed_synthetic`` loads by binary COPY into a fresh version, then builds the index (or the Milvus
    collection) once; similar products then match brute force over what Postgres holds."""
    from search.lab.benchmarks.synthetic import seed_synthetic

    seeded = seed_synthetic(count=600, dimension=DIM, space="clip", clusters=12, categories=4)
    version = similar.image_space_version("clip")
    rows = list(ImageEmbedding.objects.filter(space="clip", model_version=version.version)
                .values_list("image_id", "image__product_id", "vector"))  # fmt: skip
    assert len(rows) == 600 and seeded["version"] == version.version
    vectors = np.stack([np.asarray(r[2]) for r in rows])
    product = Product.objects.get(pk=rows[17][1])
    hits = similar.similar_products(product=product, k=5, version=version)
    order = [i for i in np.argsort(-(vectors @ vectors[17])) if rows[i][1] != product.pk][:5]
    assert [h.image_id for h in hits] == [rows[i][0] for i in order]


def test_category_rename_and_delete_in_the_admin_reach_the_store(vector_store, admin_client,
                                                                django_capture_on_commit_callbacks):  # fmt: skip
    catalogue = _catalogue(vector_store, n=24)
    hats = catalogue.product(3).category
    boots = catalogue.product(1).category
    query = catalogue.vectors[0]
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:catalog_category_change", args=[hats.pk]),
                                     {"name": "Caps", "slug": "caps", "parent": "", "position": 0})  # fmt: skip
    assert response.status_code == 302
    assert _search(vector_store, query, 24, filters=Filters(category_path="hats")) == []
    caps = Filters(category_path="caps")
    assert _search(vector_store, query, 24, filters=caps) == catalogue.expected(query, 24, caps)
    assert len(catalogue.expected(query, 24, caps)) == 3  # 6 hats, 3 of them hidden
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:catalog_category_delete", args=[boots.pk]), {"post": "yes"})
    assert response.status_code == 302
    shoes = Filters(category_path="shoes")
    assert _search(vector_store, query, 24, filters=shoes) == catalogue.expected(query, 24, shoes)
    assert len(catalogue.expected(query, 24, shoes)) == 6  # the 6 boots have no category now
