"""Vectors in real Postgres+pgvector (and, where a test takes ``vector_store``, Milvus too): indexes, nearest
neighbours against brute force, versions, failures. The store contract itself is in test_store_contract.py."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from PIL import Image

import search.embedders.sentence  # noqa: F401  (RenamedText subclasses it)
from catalog import services as catalog_services
from catalog.models import ProductImage
from search import embedders
from search.indexing import bulk, embedding, enqueue, jobs, sources, sweep, versions
from search.lab.metrics import average_precision_at_k, precision_at_k, recall_at_k
from search.models import ImageEmbedding, ReindexJob, SpaceState, SpaceVersion
from search.querying import similar
from search.vectorstores import get_store
from search.vectorstores.pgvector import index_name
from tests.factories import CategoryFactory, ProductFactory, add_image
from tests.search.workers import take_queued

pytestmark = pytest.mark.django_db


def _random_unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _images(n: int) -> list[ProductImage]:
    out = []
    for _ in range(n):
        out.append(add_image(ProductFactory()))
    return out


@pytest.mark.parametrize("dimension, kind", [(64, "vector"), (3072, "halfvec")])
def test_each_version_gets_a_partial_hnsw_cosine_index(dimension, kind):
    versions.version_register(space="cnn", version=f"test-{dimension}", dimension=dimension)
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [index_name("cnn", f"test-{dimension}")])
        (definition,) = cursor.fetchone()
    assert "USING hnsw" in definition and f"{kind}({dimension})" in definition
    assert f"{kind}_cosine_ops" in definition and f"'test-{dimension}'" in definition


def test_nearest_images_match_brute_force_cosine():
    rng = np.random.default_rng(7)
    images = _images(120)
    vectors = _random_unit(rng, len(images), 64)
    versions.version_register(space="cnn", version="bf-v1", dimension=64)
    get_store().upsert_images(
        space="cnn", version="bf-v1", items=list(zip([i.pk for i in images], vectors, strict=True))
    )
    stored = dict(ImageEmbedding.objects.filter(space="cnn").values_list("image_id", "vector"))
    assert np.allclose(stored[images[5].pk], vectors[5], atol=1e-6)  # read back from Postgres
    for q in range(10):
        query = _random_unit(rng, 1, 64)[0]
        hits = get_store().nearest_images(space="cnn", version="bf-v1", dimension=64, vector=query, k=10)
        exact = np.argsort(-(vectors @ query))[:10]
        assert [h.image_id for h in hits] == [images[i].pk for i in exact], f"query {q}"
        assert np.allclose([h.score for h in hits], (vectors @ query)[exact], atol=1e-5)


def test_the_planner_uses_the_partial_index():
    images = _images(30)
    versions.version_register(space="cnn", version="plan-v1", dimension=8)
    vectors = _random_unit(np.random.default_rng(1), 30, 8)
    get_store().upsert_images(
        space="cnn", version="plan-v1", items=list(zip([i.pk for i in images], vectors, strict=True))
    )
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT image_id FROM search_imageembedding e WHERE e.space = 'cnn' AND "
            "e.model_version = 'plan-v1' ORDER BY (e.vector::vector(8)) <=> %s::vector(8) LIMIT 5",
            ["[" + ",".join("0.1" for _ in range(8)) + "]"],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert index_name("cnn", "plan-v1") in plan


def test_validation_refuses_bad_vectors():
    good = np.ones((2, 4), dtype=np.float32)
    assert embedding.validate_vectors(good, dimension=4).dtype == np.float32
    with pytest.raises(embedding.InvalidVector, match="dimension 5"):
        embedding.validate_vectors(good, dimension=5)
    with pytest.raises(embedding.InvalidVector, match="NaN"):
        embedding.validate_vectors(np.array([[1.0, np.nan, 0, 0]]), dimension=4)
    with pytest.raises(embedding.InvalidVector, match="all-zero"):
        embedding.validate_vectors(np.zeros((1, 4)), dimension=4)


def test_image_embed_is_idempotent_and_records_versions(use_spaces):
    use_spaces("pixels", "cnn")
    image = _images(1)[0]
    assert embedding.image_embed(image_id=image.pk, space="cnn") == "ok"
    assert embedding.image_embed(image_id=image.pk, space="cnn") == "exists"
    row = ImageEmbedding.objects.get(image=image, space="cnn")
    assert row.status == "ok" and row.model_version == embedders.get("cnn").version and len(row.vector) == 1280
    assert SpaceState.objects.get(key="cnn").available
    assert versions.active_version("cnn").version == row.model_version


def test_unreadable_file_fails_with_a_reason_and_unavailable_space_is_skipped(use_spaces, settings):
    use_spaces("pixels", "simclr", simclr={"CHECKPOINT": ""})
    image = _images(1)[0]
    default_storage.delete(image.file.name)
    assert embedding.image_embed(image_id=image.pk, space="pixels") == "failed"
    row = ImageEmbedding.objects.get(image=image, space="pixels")
    assert row.status == "failed" and "missing from storage" in row.error and row.attempts == 1
    assert versions.space_counts("pixels").failed == 1
    assert embedding.image_embed(image_id=image.pk, space="simclr") == "skipped"
    state = SpaceState.objects.get(key="simclr")
    assert not state.available and "no SimCLR checkpoint configured" in state.reason


def test_an_unavailable_space_is_said_once_not_once_per_image(use_spaces, caplog):
    """A catalogue import queues every image for every space: a model that cannot load is one line in the log."""
    from search.indexing.embedding import _said_unavailable

    use_spaces("pixels", "simclr", simclr={"CHECKPOINT": ""})
    _said_unavailable.clear()
    with caplog.at_level("INFO", logger="search.indexing.embedding"):
        for image in _images(4):
            assert embedding.image_embed(image_id=image.pk, space="simclr") == "skipped"
    lines = [r for r in caplog.records if r.name == "search.indexing.embedding"]
    assert len(lines) == 1 and lines[0].levelname == "WARNING" and "space simclr is unavailable" in lines[0].message


def test_bulk_reindex_and_missing_only(use_spaces):
    use_spaces("pixels")
    images = _images(7)
    default_storage.delete(images[3].file.name)
    result = bulk.images_embed_bulk(space="pixels", batch_size=3)
    assert (result.processed, result.failed) == (6, 1)
    counts = versions.space_counts("pixels")
    assert (counts.total, counts.present, counts.failed, counts.missing, counts.stale) == (7, 6, 1, 0, 0)
    new = add_image(ProductFactory())
    again = bulk.images_embed_bulk(space="pixels", missing_only=True)
    assert again.processed == 1 and ImageEmbedding.objects.filter(image=new, status="ok").exists()


class UpgradedPixels(embedders.base.Embedder):
    """The pixel baseline at another resolution: a genuine new model version with another dimension."""

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        from search.embedders.pixels import PixelsEmbedder

        self.inner = PixelsEmbedder(self.key)

    @property
    def model_id(self) -> str:
        return "pixels 16x16"

    def _load(self) -> None:
        self.version, self.dimension = "pixels-16x16-v2", 16 * 16 * 3

    def preprocess(self, image):  # type: ignore[no-untyped-def]
        small = image.convert("RGB").resize((16, 16))
        return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0

    def encode_batch(self, batch):  # type: ignore[no-untyped-def]
        return self.inner.encode_batch(batch)


def test_model_upgrade_builds_beside_the_old_version_then_switches(use_spaces, settings, vector_store):
    use_spaces("pixels")
    category = CategoryFactory()
    products = [ProductFactory(category=category) for _ in range(4)]
    for i, product in enumerate(products):
        add_image(product, color=(60 * i, 20, 200 - 40 * i))
    bulk.images_embed_bulk(space="pixels")
    old = versions.active_version("pixels")
    before = similar.similar_products(product=products[0], k=3, space="pixels")

    settings.VITRINE_SPACES = {
        **settings.VITRINE_SPACES,
        "pixels": {"BACKEND": "tests.search.test_store_and_services.UpgradedPixels"},
    }
    embedders._instances.pop("pixels", None)
    bulk.images_embed_bulk(space="pixels", image_ids=[products[0].images.get().pk, products[1].images.get().pk])
    building = SpaceVersion.objects.get(space="pixels", version="pixels-16x16-v2")
    assert building.state == "building" and versions.active_version("pixels") == old
    # Search still answers from the complete old version only.
    assert similar.similar_products(product=products[0], k=3, space="pixels") == before
    assert versions.space_counts("pixels").stale == 2

    bulk.images_embed_bulk(space="pixels", missing_only=True)
    assert versions.active_version("pixels").version == "pixels-16x16-v2"
    assert not ImageEmbedding.objects.filter(space="pixels", model_version=old.version).exists()
    assert len(similar.similar_products(product=products[0], k=3, space="pixels")) == 3
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_indexes WHERE indexname = %s", [index_name("pixels", old.version)])
        assert cursor.fetchone()[0] == 0
    if vector_store.mirrors_catalog:  # Milvus: the old version's collection is gone, the new one serves
        from search.vectorstores.milvus import collection_name

        assert not vector_store.client.has_collection(collection_name("pixels", old.version))
        assert vector_store.client.has_collection(collection_name("pixels", "pixels-16x16-v2"))
    embedders._instances.pop("pixels", None)


def test_similar_products_collapse_images_and_exclude_itself(use_spaces, vector_store):
    use_spaces("pixels")
    query = ProductFactory()
    add_image(query, color=(250, 0, 0))
    twin = ProductFactory()
    for shade in (245, 240, 235):
        add_image(twin, color=(shade, 5, 5))
    hidden = ProductFactory(is_active=False)
    add_image(hidden, color=(250, 2, 2))
    others = [ProductFactory() for _ in range(3)]
    for i, product in enumerate(others):
        add_image(product, color=(0, 80 * i, 250))
    bulk.images_embed_bulk(space="pixels")
    hits = similar.similar_products(product=query, k=10, space="pixels")
    ids = [h.product_id for h in hits]
    assert ids[0] == twin.pk and query.pk not in ids and hidden.pk not in ids
    assert len(ids) == len(set(ids)) == 4
    assert all(-1.0 <= h.score <= 1.0 for h in hits)


def test_product_without_vectors_says_so(use_spaces, vector_store):
    use_spaces("pixels")
    product = ProductFactory()
    with pytest.raises(similar.NotIndexed):
        similar.similar_products(product=product, k=5, space="pixels")


def test_text_space_embeds_title_and_description_and_skips_unchanged(vector_store):
    product = catalog_services.product_create(title="Linen shirt", description="Light and breathable")
    assert embedding.product_embed(product_id=product.pk, space="text") == "ok"
    assert embedding.product_embed(product_id=product.pk, space="text") == "exists"
    product.description = "Heavy winter flannel"
    product.save()
    assert embedding.product_embed(product_id=product.pk, space="text") == "ok"
    assert product.embeddings.get(space="text").vector is not None


def test_metric_maths_by_hand():
    rel = [True, False, True, False, False]
    assert precision_at_k(rel, 5) == pytest.approx(0.4)
    assert recall_at_k(rel, 5, n_relevant=4) == pytest.approx(0.5)
    # AP@5 = (1/1 + 2/3) / min(5, 4)
    assert average_precision_at_k(rel, 5, n_relevant=4) == pytest.approx((1 + 2 / 3) / 4)
    assert average_precision_at_k([False] * 5, 5, n_relevant=3) == 0.0


def test_evaluate_command_on_two_colour_families(use_spaces):
    use_spaces("pixels")
    reds, blues = CategoryFactory(name="Reds"), CategoryFactory(name="Blues")
    for i in range(4):
        add_image(ProductFactory(category=reds), color=(230 - 10 * i, 20 + 5 * i, 20))
        add_image(ProductFactory(category=blues), color=(20, 20 + 5 * i, 230 - 10 * i))
    # Give each image a pattern, so pixel vectors are not all alike after centring.
    call_command("reindex", space="pixels", sync=True, no_progress=True, stdout=StringIO(), stderr=StringIO())
    out = StringIO()
    call_command("evaluate", space="pixels", k=3, as_json=True, stdout=out)
    result = json.loads(out.getvalue())
    assert {"space", "k", "n_queries", "precision_at_k", "recall_at_k", "map_at_k"} <= set(result)
    assert result["n_queries"] == 8 and result["k"] == 3
    assert result["precision_at_k"] == pytest.approx(1.0)
    assert result["recall_at_k"] == pytest.approx(1.0)


def test_reindex_command_queues_jobs_and_jobs_report_progress(use_spaces):
    use_spaces("pixels", "text")
    for _ in range(3):
        add_image(ProductFactory(price=Decimal("5")))
    out = StringIO()
    call_command("reindex", stdout=out)
    queued = list(ReindexJob.objects.order_by("space"))
    assert [j.space for j in queued] == ["pixels", "text"] and "queued reindex job" in out.getvalue()
    for job in queued:
        done = jobs.reindex_job_run(job_id=job.pk)
        assert done.status == "done" and done.processed == done.total == 3


def test_unavailable_space_fails_its_job_with_the_reason(use_spaces):
    use_spaces("simclr", simclr={"CHECKPOINT": ""})
    job = jobs.reindex_job_create(space="simclr")
    done = jobs.reindex_job_run(job_id=job.pk)
    assert done.status == "failed" and "no SimCLR checkpoint" in done.error


class BrokenEmbedder(embedders.base.Embedder):
    """A model that loads but crashes on every batch (out of memory, a bad kernel…)."""

    @property
    def model_id(self) -> str:
        return "broken"

    def _load(self) -> None:
        self.version, self.dimension = "broken-v1", 8

    def preprocess(self, image):  # type: ignore[no-untyped-def]
        return np.zeros(8, dtype=np.float32)

    def encode_batch(self, batch):  # type: ignore[no-untyped-def]
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_an_image_that_keeps_failing_ends_failed_after_bounded_attempts(settings, use_spaces):
    from search.tasks import image_embed_task

    settings.VITRINE_SPACES = {
        **settings.VITRINE_SPACES,
        "broken": {"BACKEND": "tests.search.test_store_and_services.BrokenEmbedder"},
    }
    use_spaces("broken")
    settings.VITRINE_EMBED_MAX_ATTEMPTS = 3
    image = _images(1)[0]
    # Eager apply runs the task's retries in this process, backoff aside.
    result = image_embed_task.apply(args=[image.pk, "broken"])
    assert result.get(propagate=False) == "failed"
    row = ImageEmbedding.objects.get(image=image, space="broken")
    assert row.status == "failed" and row.attempts == 3 and "illegal memory access" in row.error
    assert versions.space_counts("broken").failed == 1


def test_sweep_counts_missing_and_stale_images(use_spaces):
    use_spaces("pixels", "text")
    images = _images(5)
    bulk.images_embed_bulk(space="pixels", image_ids=[images[0].pk, images[1].pk])
    queued = sweep.sweep()
    assert queued == {"pixels": 3, "text": 5}


def test_a_backlog_beyond_the_sweep_limit_becomes_one_reindex_job(use_spaces, settings):
    use_spaces("pixels", "text")
    settings.VITRINE_SWEEP_MAX = 3
    images = _images(5)
    bulk.images_embed_bulk(space="pixels", image_ids=[images[0].pk])
    assert sweep.sweep() == {"pixels": 4, "text": 4}  # 4 seen of 4 (pixels) and of 5 (text): both over 3
    created = list(ReindexJob.objects.order_by("space").values_list("space", "missing_only", "product_ids", "status"))
    assert created == [("pixels", True, None, "queued"), ("text", True, None, "queued")]
    assert sweep.sweep() == {"pixels": 0, "text": 0}  # the jobs cover it: nothing queued twice
    assert ReindexJob.objects.count() == 2
    for job in ReindexJob.objects.all():
        done = jobs.reindex_job_run(job_id=job.pk)
        assert (done.status, done.failed) == ("done", 0)
    assert versions.space_counts("pixels").missing == 0 and versions.space_counts("text").missing == 0
    assert sweep.sweep() == {"pixels": 0, "text": 0}
    assert ReindexJob.objects.count() == 2


def test_a_job_plans_id_ranges_a_window_ahead_and_covers_what_existed_when_it_started(use_spaces, settings):
    use_spaces("pixels")
    settings.VITRINE_REINDEX_CHUNK, settings.VITRINE_REINDEX_WINDOW = 2, 2
    ids = [image.pk for image in _images(5)]
    job = jobs.reindex_job_plan(job_id=jobs.reindex_job_create(space="pixels").pk)
    assert (job.status, job.total, job.upper_id, job.chunks.count()) == ("running", 5, ids[-1], 0)
    assert jobs.reindex_job_queue_chunks(job_id=job.pk) == 2  # the window, planned as it is queued
    ranges = list(job.chunks.values_list("number", "first_id", "last_id", "size"))
    assert ranges == [(0, ids[0], ids[1], 2), (1, ids[2], ids[3], 2)]
    late = add_image(ProductFactory())  # uploaded after the job started: its own task embeds it, not the job
    jobs.reindex_chunk_run(chunk_id=job.chunks.get(number=0).pk, queue_next=True)
    ranges = [(*row[:4], row[4] is None) for row in job.chunks.values_list("number", "first_id", "last_id", "size",
                                                                               "done_at")]  # fmt: skip
    assert ranges[1:] == [(1, ids[2], ids[3], 2, True), (2, ids[4], ids[4], 1, True)]  # one done, one planned
    job = jobs.reindex_job_run(job_id=job.pk)
    assert (job.status, job.processed, job.total, job.skipped, job.chunks.count()) == ("done", 5, 5, 0, 3)
    embedded = set(ImageEmbedding.objects.filter(space="pixels", status="ok").values_list("image_id", flat=True))
    assert embedded == set(ids) and late.pk not in embedded


def test_a_job_too_big_to_count_starts_with_an_estimate_and_ends_exact(use_spaces, settings):
    use_spaces("pixels")
    settings.VITRINE_REINDEX_COUNT_MAX, settings.VITRINE_REINDEX_CHUNK = 3, 2
    _images(5)
    job = jobs.reindex_job_plan(job_id=jobs.reindex_job_create(space="pixels").pk)
    assert job.status == "running" and job.total_estimated and job.total >= 4  # at least what was counted
    assert job.progress.startswith("0/~")
    job = jobs.reindex_job_run(job_id=job.pk)
    assert (job.status, job.processed, job.total, job.total_estimated, job.skipped) == ("done", 5, 5, False, 0)
    assert (job.progress, job.percent) == ("5/5", 100)


def test_a_missing_only_job_counts_what_uploads_did_meanwhile_as_skipped(use_spaces, settings):
    use_spaces("pixels")
    settings.VITRINE_REINDEX_CHUNK = 2
    ids = [image.pk for image in _images(4)]
    job = jobs.reindex_job_plan(job_id=jobs.reindex_job_create(space="pixels", missing_only=True).pk)
    assert job.total == 4
    embedding.image_embed(image_id=ids[3], space="pixels")  # an upload's own task gets there first
    job = jobs.reindex_job_run(job_id=job.pk)
    assert (job.status, job.processed, job.skipped) == ("done", 3, 1)
    assert ImageEmbedding.objects.filter(space="pixels", status="ok").count() == 4


def test_jobs_whose_messages_were_lost_are_queued_again_by_the_sweep(use_spaces, settings,
                                                                      django_capture_on_commit_callbacks):  # fmt: skip
    use_spaces("pixels")
    settings.VITRINE_REINDEX_CHUNK = 2
    _images(5)
    # In a test transaction on_commit never runs: like a broker that was down, these jobs were never queued.
    waiting = jobs.reindex_job_create(space="pixels")
    running = jobs.reindex_job_plan(job_id=jobs.reindex_job_create(space="pixels", missing_only=True).pk)
    jobs.reindex_job_queue_chunks(job_id=running.pk)  # two chunks planned; their messages are "lost"
    fresh = jobs.reindex_job_create(space="pixels")
    long_ago = timezone.now() - timedelta(hours=3)
    ReindexJob.objects.filter(pk=waiting.pk).update(created_at=long_ago)
    ReindexJob.objects.filter(pk=running.pk).update(created_at=long_ago, heartbeat_at=long_ago)
    take_queued()
    with django_capture_on_commit_callbacks(execute=True):  # the chunks' messages go out after commit
        resumed = jobs.reindex_jobs_resume_stalled(older_than_s=3600)
    assert sorted(resumed) == [waiting.pk, running.pk]
    chunks = list(running.chunks.order_by("number").values_list("pk", flat=True))
    assert sorted(take_queued()) == sorted(
        [("search.tasks.reindex_job_task", [waiting.pk])]
        + [("search.tasks.reindex_chunk_task", [pk]) for pk in chunks]
    )  # fmt: skip
    assert fresh.pk not in jobs.reindex_jobs_resume_stalled(older_than_s=3600)  # young: just waiting its turn
    take_queued()


def test_text_space_counts_products_and_notices_edited_text():
    products = [catalog_services.product_create(title=f"Mug {i}") for i in range(3)]
    for product in products[:2]:
        embedding.product_embed(product_id=product.pk, space="text")
    products[1].title = "Mug, now bigger"
    products[1].save()
    counts = versions.space_counts("text")
    assert (counts.total, counts.present, counts.stale, counts.missing) == (3, 1, 1, 1)


class RenamedText(embedders.sentence.TextEmbedder):
    """The same MiniLM under another version label: what a text-model upgrade looks like to the pipeline."""

    @property
    def version_label(self) -> str:
        return "minilm-upgraded"


def test_text_model_upgrade_switches_when_every_product_has_a_vector(settings, use_spaces, vector_store):
    use_spaces("text")
    products = [catalog_services.product_create(title=f"Teapot {i}") for i in range(3)]
    bulk.products_embed_bulk(space="text")
    old = versions.active_version("text")
    settings.VITRINE_SPACES = {
        **settings.VITRINE_SPACES,
        "text": {"BACKEND": "tests.search.test_store_and_services.RenamedText"},
    }
    embedders._instances.pop("text", None)
    embedding.product_embed(product_id=products[0].pk, space="text")
    assert versions.active_version("text") == old  # still building: two products lack the new vector
    bulk.products_embed_bulk(space="text", missing_only=True)
    new = versions.active_version("text")
    assert new.version.startswith("minilm-upgraded-") and new != old
    from search.models import ProductEmbedding

    assert not ProductEmbedding.objects.filter(space="text", model_version=old.version).exists()
    embedders._instances.pop("text", None)


def test_a_dead_broker_never_fails_an_upload(caplog, monkeypatch):
    """``image_index_later`` queues through ``enqueue.send``; here it meets a broker nobody answers."""
    from celery import Celery

    # Not set as current: shared tasks elsewhere must keep using the real app.
    dead = Celery("dead-broker", broker="redis://127.0.0.1:9/0", set_as_current=False)  # nothing listens there

    @dead.task(name="dead.noop")
    def noop(*args):  # type: ignore[no-untyped-def]
        return args

    monkeypatch.setattr(enqueue, "current_app", dead)
    started = time.monotonic()
    enqueue.send("dead.noop", 1, "pixels")  # must not raise
    assert "could not queue dead.noop" in caplog.text
    assert time.monotonic() - started < 10


def test_images_whose_enqueue_failed_are_found_by_the_sweep(use_spaces):
    use_spaces("pixels")
    image = add_image(ProductFactory())  # in this test transaction nothing is ever queued
    assert versions.space_counts("pixels").missing == 1
    assert sweep.sweep(spaces=["pixels"]) == {"pixels": 1}
    assert image.pk


class SlowPixels(embedders.base.Embedder):
    """The pixel baseline with a forward pass that takes time: later batches finish first, and the test
    sees how many passes ran at once."""

    running = 0
    most = 0
    lock = threading.Lock()

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        from search.embedders.pixels import PixelsEmbedder

        self.inner = PixelsEmbedder(self.key)
        self.calls = 0

    @property
    def model_id(self) -> str:
        return "pixels, slowly"

    def _load(self) -> None:
        self.inner.load()
        self.version, self.dimension = self.inner.version, self.inner.dimension

    def decode_sides(self) -> tuple[int, int]:
        return self.inner.decode_sides()

    def preprocess(self, image):  # type: ignore[no-untyped-def]
        return self.inner.preprocess(image)

    def encode_batch(self, batch):  # type: ignore[no-untyped-def]
        cls = type(self)
        with cls.lock:
            cls.running += 1
            cls.most = max(cls.most, cls.running)
            self.calls += 1
            delay = 0.15 / self.calls  # each batch quicker than the one before: they finish out of order
        time.sleep(delay)
        with cls.lock:
            cls.running -= 1
        return self.inner.encode_batch(batch)


@pytest.mark.parametrize("streams", [1, 2])
def test_bulk_runs_batches_side_by_side_and_keeps_each_vector_with_its_image(use_spaces, settings, streams):
    settings.VITRINE_INFERENCE_THREADS = 2
    settings.VITRINE_INFERENCE_STREAMS = streams
    settings.VITRINE_SPACES = {**settings.VITRINE_SPACES,
                               "pixels": {"BACKEND": "tests.search.test_store_and_services.SlowPixels"}}  # fmt: skip
    use_spaces("pixels")
    embedders._instances.pop("pixels", None)
    SlowPixels.running = SlowPixels.most = 0
    rng = np.random.default_rng(7)
    images = []
    for _ in range(9):  # noise: every image's vector is far from every other's
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)).save(out, format="PNG")
        images.append(catalog_services.product_image_add(product=ProductFactory(), file=out.getvalue()))
    result = bulk.images_embed_bulk(space="pixels", batch_size=2)
    embedder = embedders.get("pixels")
    assert embedder.streams == streams and SlowPixels.most == streams
    assert result.processed == 9
    stored = {row.image_id: np.asarray(row.vector.to_list() if hasattr(row.vector, "to_list") else row.vector)
              for row in ImageEmbedding.objects.filter(space="pixels", status="ok")}  # fmt: skip
    for image in images:
        alone = embedder.encode_batch([embedder.preprocess(sources.load_image_rgb(image, embedder))])[0]
        assert float(stored[image.pk] @ alone) > 0.9999, image.pk
        others = [float(stored[other.pk] @ alone) for other in images if other.pk != image.pk]
        assert max(others) < 0.5  # so a vector stored under the wrong image could not pass
    embedders._instances.pop("pixels", None)


def test_benchmark_compares_raw_forward_and_reindex_side_by_side(use_spaces, settings):
    use_spaces("pixels")
    settings.VITRINE_INFERENCE_THREADS, settings.VITRINE_INFERENCE_STREAMS = 2, 2
    _images(6)
    out, err = StringIO(), StringIO()
    call_command("benchmark", "--space", "pixels", "--repeat", "2", "--batch-size", "2", stdout=out, stderr=err)
    assert err.getvalue().count("streams busy") == 2
    summary = next(line for line in out.getvalue().splitlines() if line.startswith("pixels: raw forward"))
    assert "of 2 stream(s) during the reindex" in summary
    assert ImageEmbedding.objects.filter(space="pixels", status="ok").count() == 6  # the reindex really ran


def test_the_vector_read_for_a_product_is_its_primary_pictures_else_its_first_and_only_a_computed_one():
    """What the Milvus store searches with for "similar products" (one plain statement, see product_vector)."""
    from search.models import EmbeddingStatus, ProductEmbedding

    rng = np.random.default_rng(3)
    product = ProductFactory()
    first, second, third = (add_image(product) for _ in range(3))
    for position, image in enumerate((first, second, third)):
        ProductImage.objects.filter(pk=image.pk).update(position=position)
    vectors = _random_unit(rng, 3, 8)
    for image, vector in zip((first, second, third), vectors, strict=True):
        ImageEmbedding.objects.create(image=image, space="s", model_version="v", vector=vector)

    def read() -> np.ndarray | None:
        return ImageEmbedding.objects.product_vector(product_id=product.pk, space="s", version="v")

    ProductImage.objects.filter(product=product).update(is_primary=False)
    assert np.allclose(read(), vectors[0])  # no primary: the first by position
    ProductImage.objects.filter(pk=third.pk).update(is_primary=True)
    assert np.allclose(read(), vectors[2]) and read().dtype == np.float32
    ImageEmbedding.objects.filter(image=third).update(status=EmbeddingStatus.FAILED)
    assert np.allclose(read(), vectors[0])  # a failed one never stands for the product
    assert ImageEmbedding.objects.product_vector(product_id=product.pk, space="s", version="other") is None

    assert ProductEmbedding.objects.product_vector(product_id=product.pk, space="t", version="v") is None
    ProductEmbedding.objects.create(product=product, space="t", model_version="v", vector=vectors[1],
                                    source_hash="x")  # fmt: skip
    assert np.allclose(ProductEmbedding.objects.product_vector(product_id=product.pk, space="t", version="v"),
                       vectors[1])  # fmt: skip


def test_a_512_d_vector_is_stored_in_its_row_and_a_3072_d_one_still_fits():
    """512 float dimensions are 2,052 bytes, just over the size at which PostgreSQL moves a value out of its row for
    pgvector's default storage; reading it back was then a TOAST lookup per row. Stored ``MAIN``, it stays in the
    row; a 3,072-d pixel vector (12 KB, more than a page) still goes out of line."""
    from search.vectorstores.pgvector import images_write

    rng = np.random.default_rng(8)
    small, big = add_image(ProductFactory()), add_image(ProductFactory())
    images_write(space="s", version="v512", items=[(small.pk, _random_unit(rng, 1, 512)[0])])
    images_write(space="s", version="v3072", items=[(big.pk, _random_unit(rng, 1, 3072)[0])])
    with connection.cursor() as cursor:
        cursor.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = 'search_imageembedding'::regclass "
                       "AND attname = 'vector' UNION ALL SELECT attstorage FROM pg_attribute "
                       "WHERE attrelid = 'search_productembedding'::regclass AND attname = 'vector'")  # fmt: skip
        assert [row[0] for row in cursor.fetchall()] == ["m", "m"]
        # Out of line: a TOAST chunk id (or a compressed value); in the row: neither.
        cursor.execute("SELECT model_version, pg_column_size(vector), "
                       "pg_column_compression(vector) IS NOT NULL OR pg_column_toast_chunk_id(vector) IS NOT NULL "
                       "FROM search_imageembedding WHERE space = 's' ORDER BY length(model_version)")  # fmt: skip
        (_, small_size, small_out), (_, big_size, big_out) = cursor.fetchall()
    assert not small_out and small_size >= 512 * 4
    assert big_out and big_size <= 3072 * 4 + 8
    got = ImageEmbedding.objects.product_vector(product_id=big.product_id, space="s", version="v3072")
    assert got is not None and got.shape == (3072,)
