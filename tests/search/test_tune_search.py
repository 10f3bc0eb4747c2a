"""``manage.py tune_search``: the breadth it records reaches the target on queries it never saw, and every query
of the version then uses it; on pgvector and on the Milvus server."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from search.indexing.tuning import LADDER
from search.models import ImageEmbedding, SpaceState, SpaceVersion
from search.querying import similar

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
TARGET = 0.95


def _fresh_recall(store, row: SpaceVersion, seed: int, n: int = 60) -> float:  # type: ignore[no-untyped-def]
    """recall@10 of the store's similar-images query, as it runs now, on queries drawn with another seed."""
    rows = list(ImageEmbedding.objects.filter(space=row.space, model_version=row.version)
                .values_list("image_id", "image__product_id", "vector"))  # fmt: skip
    ids = np.array([r[0] for r in rows])
    owners = np.array([r[1] for r in rows])
    vectors = np.stack([np.asarray(r[2], dtype=np.float32) for r in rows])
    recalls = []
    for i in np.random.default_rng(seed).choice(len(rows), n, replace=False):
        scores = np.where(owners == owners[i], -np.inf, vectors @ vectors[i])
        truth = set(ids[np.argsort(-scores, kind="stable")[:10]].tolist())
        hits = store.nearest_images(space=row.space, version=row.version, dimension=row.dimension, vector=vectors[i],
                                    k=10, exclude_product_id=int(owners[i]), published_only=False)  # fmt: skip
        recalls.append(len(truth & {h.image_id for h in hits}) / 10)
    return float(np.mean(recalls))


@pytest.mark.parametrize("vector_store", ["pgvector", "milvus-server"], indirect=True)
def test_tune_search_records_the_smallest_breadth_that_reaches_the_target_on_fresh_queries(vector_store, admin_client):
    from search.lab.benchmarks.synthetic import seed_synthetic

    # Hard data for a graph: many small clusters in 64 dimensions.
    seed_synthetic(count=3000, dimension=64, space="clip", clusters=600, categories=4)
    row = similar.image_space_version("clip")
    out, err = StringIO(), StringIO()
    call_command("tune_search", "--space", "clip", "--target", str(TARGET), "--queries", "60", stdout=out, stderr=err)
    row.refresh_from_db()
    assert row.tuned_store == vector_store.tuning_key and row.tuned_size == 3000 and row.tuned_at is not None
    assert row.tuned_ef in LADDER and row.tuned_recall is not None
    ladder = [(int(line.split("ef")[1].split()[0]), float(line.split("recall@10")[1].split()[0]),
               float(line.split("at least")[1].split()[0]))
              for line in err.getvalue().splitlines() if "(tuning queries;" in line]  # fmt: skip
    # The chosen breadth's recall reaches the target with the sample's margin; no smaller one did.
    assert ladder[-1][0] == row.tuned_ef and ladder[-1][2] >= TARGET and ladder[-1][1] > ladder[-1][2]
    assert all(bound < TARGET for _, _, bound in ladder[:-1])
    assert f"ef {row.tuned_ef}, held-out recall@10 {row.tuned_recall:.3f}" in out.getvalue()
    assert row.tuned_recall >= TARGET - 0.02
    # The admin's space page shows it; a recall below the target says what to do.
    page_url = reverse("admin:search_spacestate_change", args=[SpaceState.objects.get(key="clip").pk])
    page = admin_client.get(page_url).content.decode()
    assert f"ef {row.tuned_ef} on {row.tuned_store}: recall@10 {row.tuned_recall:.3f} on held-out" in page
    assert "below the target" not in page
    SpaceVersion.objects.filter(pk=row.pk).update(tuned_recall=0.5)
    assert "below the target 0.95: no breadth reaches it" in admin_client.get(page_url).content.decode()
    SpaceVersion.objects.filter(pk=row.pk).update(tuned_recall=row.tuned_recall)
    # Queries use it from now on, and it holds on queries drawn anew.
    assert _fresh_recall(vector_store, row, seed=99) >= TARGET - 0.02
    if vector_store.tuning_key == "pgvector":
        with CaptureQueriesContext(connection) as captured:
            _fresh_recall(vector_store, row, seed=5, n=1)
        breadth = max(row.tuned_ef, 20)
        sets = [q["sql"] for q in captured.captured_queries if "hnsw.ef_search" in q["sql"]]
        # One round trip: the breadth travels with the search itself.
        assert len(sets) == 1 and sets[0].startswith(f"SET LOCAL hnsw.ef_search = {breadth}; SELECT ")


def test_tune_search_refuses_a_target_that_is_no_recall_and_a_space_without_vectors():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="between 0 and 1"):
        call_command("tune_search", "--target", "1.5")
    with pytest.raises(CommandError, match="no active version"):
        call_command("tune_search", "--space", "clip")


def test_the_sweep_tunes_again_a_version_that_grew_by_half(use_spaces):
    from search.indexing.sweep import sweep
    from search.lab.benchmarks.synthetic import seed_synthetic

    use_spaces("clip")
    seed_synthetic(count=600, dimension=16, space="clip", clusters=30, categories=2)
    call_command("tune_search", "--space", "clip", "--queries", "40", stdout=StringIO(), stderr=StringIO())
    row = SpaceVersion.objects.get(space="clip", state="active")
    assert row.tuned_size == 600
    SpaceVersion.objects.filter(pk=row.pk).update(tuned_size=401, tuned_at=None)  # 600 < 1.5 × 401: not yet
    sweep(spaces=["clip"])
    row.refresh_from_db()
    assert row.tuned_at is None and row.tuned_size == 401
    SpaceVersion.objects.filter(pk=row.pk).update(tuned_size=400)  # 600 = 1.5 × 400: grown by half
    sweep(spaces=["clip"])
    row.refresh_from_db()
    assert row.tuned_at is not None and row.tuned_size == 600 and row.tuned_ef in LADDER


def test_the_margin_is_what_another_sample_of_as_many_queries_reaches_with_95_percent_probability():
    from search.indexing.tuning import lower_bound

    recalls = np.array([1.0] * 90 + [0.5] * 10)  # mean 0.95: on another sample of 100 it falls short half the time
    sd = recalls.std(ddof=1)
    assert lower_bound(recalls) == pytest.approx(0.95 - 1.645 * sd * np.sqrt(2 / 100)) and lower_bound(recalls) < 0.95
    rng = np.random.default_rng(0)  # and it holds: a mean from the same recalls falls below it about 5 % of the time
    population = rng.choice([1.0, 0.9, 0.8, 0.5], p=[0.8, 0.1, 0.05, 0.05], size=100_000)
    below = [lower_bound(rng.choice(population, 200)) > rng.choice(population, 200).mean() for _ in range(2000)]
    assert 0.02 < np.mean(below) < 0.09
    assert lower_bound(np.ones(50)) == 1.0 and lower_bound(np.array([0.7])) == pytest.approx(0.7)


@pytest.mark.django_db(transaction=True)
def test_a_vector_querys_breadth_holds_for_that_query_alone_in_or_out_of_a_transaction():
    """``run_vector_query`` sends the breadth and the query as one message: the query runs with it, and the
    connection's own setting is untouched afterwards, in autocommit as in a transaction block."""
    from django.db import transaction

    from search.vectorstores.sql import SESSION_EF_SEARCH, run_vector_query

    def session_breadth() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('hnsw.ef_search')")
            return str(cursor.fetchone()[0])

    assert run_vector_query("SELECT current_setting('hnsw.ef_search'), %s::int", [7], k=10, ef=48) == [("48", 7)]
    assert run_vector_query("SELECT current_setting('hnsw.ef_search')", [], k=60, ef=48) == [("120",)]  # 2 k
    assert session_breadth() == str(SESSION_EF_SEARCH)  # nothing left behind on the connection
    with transaction.atomic():
        assert run_vector_query("SELECT current_setting(%(name)s)", {"name": "hnsw.ef_search"}, k=5, ef=24) == [
            ("24",)]  # fmt: skip
    assert session_breadth() == str(SESSION_EF_SEARCH)
    with pytest.raises(Exception, match="division by zero"):  # an error in the query is the query's error
        run_vector_query("SELECT 1 / 0", [], k=10, ef=48)
    assert session_breadth() == str(SESSION_EF_SEARCH)
    # A connection set up for server-side binding cannot send two statements at once: a transaction of their own.
    options = connection.settings_dict.setdefault("OPTIONS", {})
    options["server_side_binding"] = True
    try:
        assert run_vector_query("SELECT current_setting('hnsw.ef_search')", [], k=10, ef=64) == [("64",)]
    finally:
        del options["server_side_binding"]
    assert session_breadth() == str(SESSION_EF_SEARCH)
