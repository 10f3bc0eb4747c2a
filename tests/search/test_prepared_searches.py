"""Vector searches as prepared statements of their connection (``search.vectorstores.sql.run_vector_query``): the
same answers as the plain statement under every filter, prepared once per connection, planned once (the generic
plan still walks the HNSW index), and a statement that went missing is prepared again instead of failing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.models import Category, Product
from search.querying import hybrid, similar
from search.vectorstores import get_store, sql
from search.vectorstores.base import Filters, VersionRef

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def catalogue(use_spaces):  # type: ignore[no-untyped-def]
    from search.lab.benchmarks.synthetic import seed_synthetic

    use_spaces("clip", "text")
    seed_synthetic(count=3000, dimension=32, space="clip", clusters=150, categories=3, text_dimension=16)
    every_third = list(Product.objects.order_by("pk").values_list("pk", flat=True))[::3]
    Product.objects.filter(pk__in=every_third).update(color="red", stock=0)
    with connection.cursor() as cursor:  # statistics as autovacuum would leave them: plans are made from them
        cursor.execute("ANALYZE")
    return similar.similar_ranking("hybrid")


def _indexed(every: int = 1) -> list[int]:
    """Products with vectors (the seed's template product, which holds the shared picture, has none)."""
    from search.models import ProductEmbedding

    return list(ProductEmbedding.objects.order_by("product_id").values_list("product_id", flat=True))[::every]


def _searches(ranking: similar.Ranking, product_id: int, filters: Filters | None) -> tuple[object, ...]:
    store, image, text = get_store(), ranking.image, ranking.text
    assert text is not None
    vector = similar.product_query_vector(product=Product.objects.get(pk=product_id), space=image.space,
                                          version=image.version)  # fmt: skip
    return (
        store.nearest_images(space=image.space, version=image.version, dimension=image.dimension, k=20,
                             exclude_product_id=product_id, like_product_id=product_id, filters=filters),
        store.nearest_images(space=image.space, version=image.version, dimension=image.dimension, k=10,
                             vector=vector, filters=filters),
        store.nearest_products(space=text.space, version=text.version, dimension=text.dimension, k=10,
                               vector=text_vector(text, product_id), filters=filters),
        store.similar_candidates(product_id=product_id, pool=hybrid.pool_size(10), filters=filters,
                                 image=VersionRef(image.space, image.version, image.dimension),
                                 text=VersionRef(text.space, text.version, text.dimension)),
    )  # fmt: skip


def text_vector(text, product_id):  # type: ignore[no-untyped-def]
    from search.models import ProductEmbedding

    return ProductEmbedding.objects.product_vector(product_id=product_id, space=text.space, version=text.version)


def _prepared_names() -> dict[str, tuple[int, int]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, generic_plans, custom_plans FROM pg_prepared_statements")
        return {name: (generic, custom) for name, generic, custom in cursor.fetchall()}


def test_prepared_searches_answer_as_the_plain_statements_under_every_filter(catalogue, settings):
    category = Category.objects.order_by("pk")[0]
    every = [None, Filters(category_path=category.path), Filters(price_min=Decimal("10"), price_max=Decimal("500")),
             Filters(in_stock=True), Filters(colour="red"),
             Filters(category_path=category.path, price_min=Decimal("1"), in_stock=True, colour="red")]  # fmt: skip
    products = _indexed(500)
    for filters in every:
        for product_id in products:
            settings.VITRINE_PG_PREPARED_SEARCHES = False
            plain = _searches(catalogue, product_id, filters)
            settings.VITRINE_PG_PREPARED_SEARCHES = True
            assert _searches(catalogue, product_id, filters) == plain
            assert _searches(catalogue, product_id, filters) == plain  # prepared before: EXECUTE alone
    assert len(_prepared_names()) == 4 * len(every)  # one statement per search and filter shape
    assert all(name.startswith("vitrine_") for name in _prepared_names())


def test_a_search_is_prepared_once_per_connection_and_its_generic_plan_walks_the_hnsw_index(catalogue):
    image = catalogue.image
    products = _indexed()[:12]

    def by_look(product_id: int) -> object:
        return get_store().nearest_images(space=image.space, version=image.version, dimension=image.dimension, k=20,
                                          exclude_product_id=product_id, like_product_id=product_id)  # fmt: skip

    with CaptureQueriesContext(connection) as captured:
        answers = [by_look(pk) for pk in products]
    messages = [q["sql"] for q in captured.captured_queries if "vitrine_" in q["sql"]]
    assert len(messages) == len(products)  # one message per search
    execute = "SET LOCAL hnsw.ef_search = 100; EXECUTE vitrine_"
    assert messages[0].startswith("PREPARE vitrine_") and execute in messages[0]
    assert all(m.startswith(execute) for m in messages[1:])
    assert all(len(a) == 20 for a in answers)  # type: ignore[arg-type]
    ((name, (generic, custom)),) = _prepared_names().items()
    assert generic >= 1 and custom == 5  # PostgreSQL plans it anew five times, then keeps one plan
    execute = messages[-1].split("; ", 1)[1]  # as sent: the EXECUTE with its arguments
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + execute.replace("%", "%%"))
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert execute.startswith(f"EXECUTE {name}(") and "Index Scan using search_img_clip_" in plan, plan


def test_a_prepared_search_that_went_missing_is_prepared_again_and_errors_reset_the_connections_statements(
    catalogue, monkeypatch
):  # fmt: skip
    product_id = _indexed()[7]
    first = _searches(catalogue, product_id, None)
    assert len(_prepared_names()) == 4
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # as DISCARD ALL or a pooler's other server connection would leave it
    assert _searches(catalogue, product_id, None) == first
    assert len(_prepared_names()) == 4
    # An error in the query itself is the query's; the connection's statements are let go before the next search.
    with pytest.raises(Exception, match="division by zero"):
        sql.run_vector_query("SELECT 1 / %s", [0], k=10)
    with CaptureQueriesContext(connection) as captured:
        assert _searches(catalogue, product_id, None) == first
    searches = [q["sql"] for q in captured.captured_queries if "vitrine_" in q["sql"]]
    assert searches[0].startswith("DEALLOCATE ALL; PREPARE vitrine_") and not searches[1].startswith("DEALLOCATE")
    # Past MAX_PREPARED statements on one connection, all are let go and the new one is prepared.
    monkeypatch.setattr(sql, "MAX_PREPARED", 4)
    assert sql.run_vector_query("SELECT %s::int + 1", [1], k=10) == [(2,)]
    assert len(_prepared_names()) == 1


def test_inside_a_transaction_block_a_search_goes_as_a_plain_statement(catalogue):
    from django.db import transaction

    product_id = _indexed()[3]
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        _searches(catalogue, product_id, None)
    assert not any("vitrine_" in q["sql"] for q in captured.captured_queries)
    assert _prepared_names() == {}
