"""Embedding writes: compute and store vectors, keep them current, reindex, switch model versions.

Entry points from ``catalog``: :func:`image_index_later` (an image was saved),
:func:`product_index_later` (a product's text changed) and
:func:`products_reindex` (staff asked). Everything else is called by tasks and
commands.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import Greatest
from django.utils import timezone

from catalog import imaging
from catalog.models import Product, ProductImage
from search import embedders
from search.embedders import Embedder, SpaceUnavailable
from search.models import (
    EmbeddingStatus,
    ImageEmbedding,
    ProductEmbedding,
    ReindexChunk,
    ReindexJob,
    SpaceState,
    SpaceVersion,
)
from search.vectorstores import get_store

logger = logging.getLogger(__name__)


class InvalidVector(ValueError):
    """A model produced something that must not be stored."""


class ImageUnreadable(Exception):
    """The stored file is missing or cannot be decoded: retrying will not help."""


# --- entry points from catalog -----------------------------------------------------------


def _enqueue_safely(task: Any, *args: Any) -> None:
    """Queue a task; if the broker is down, log it and move on. The row is saved either way and
    the periodic sweep queues whatever has no vector, so an upload never fails for this."""
    try:
        task.apply_async(args=args, retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2,
                                                              "interval_step": 0.5, "interval_max": 1})  # fmt: skip
    except Exception as exc:
        logger.warning("could not queue %s%s (the sweep will): %s", task.name, args, exc)


def image_index_later(*, image_id: int) -> None:
    """After the current transaction commits, embed the image in every enabled image space."""
    from search import tasks

    def enqueue() -> None:
        for space in embedders.image_spaces():
            _enqueue_safely(tasks.image_embed_task, image_id, space)

    transaction.on_commit(enqueue, robust=True)


def product_index_later(*, product_id: int) -> None:
    """After commit, (re)embed the product's title and description in the text spaces."""
    from search import tasks

    def enqueue() -> None:
        for space in embedders.text_spaces():
            _enqueue_safely(tasks.product_embed_task, product_id, space)

    transaction.on_commit(enqueue, robust=True)


# A change to a few products (one admin save, a small bulk action) reaches the vector store's copy before the
# admin's next page; a bigger one (a category moved with thousands of products) goes to the worker in tasks
# of SYNC_TASK_CHUNK, so no request waits on it and no task outgrows its time limit.
SYNC_INLINE_MAX = 100
SYNC_TASK_CHUNK = 1000


def products_changed(*, product_ids: Sequence[int]) -> None:
    """Products' price, stock, category, publication, images or existence changed: after commit, bring the
    vector store's copy of them up to date. Only stores that keep such a copy (Milvus) have work to do;
    pgvector joins the live rows. Up to ``SYNC_INLINE_MAX`` products sync here, more are queued (as is a
    sync that fails: the store may be down); ``vectorstore_rebuild`` repairs anything at any time."""
    from search import tasks

    store = get_store()
    if not store.mirrors_catalog or not product_ids:
        return
    ids = sorted({int(pk) for pk in product_ids})

    def queue() -> None:
        for start in range(0, len(ids), SYNC_TASK_CHUNK):
            _enqueue_safely(tasks.products_sync_task, ids[start : start + SYNC_TASK_CHUNK])

    def sync() -> None:
        if len(ids) > SYNC_INLINE_MAX:
            queue()
            return
        try:
            store.products_sync(product_ids=ids)
        except Exception as exc:
            logger.warning("vector store sync of products %s failed (queued to retry): %s", ids[:20], exc)
            queue()

    transaction.on_commit(sync, robust=True)


def category_changed(*, category_path: str) -> None:
    """A category was renamed or moved: its products (and its subcategories') changed path."""
    ids = Product.objects.filter(Q(category__path=category_path) | Q(category__path__startswith=category_path + "/"))
    products_changed(product_ids=list(ids.values_list("pk", flat=True)))


def products_reindex(*, product_ids: Sequence[int], requested_by: Any = None) -> list[ReindexJob]:
    """Staff asked to recompute these products' vectors in every enabled space (runs in the worker)."""
    return [
        reindex_job_create(space=space, missing_only=False, product_ids=list(product_ids), requested_by=requested_by)
        for space in embedders.enabled()
    ]


# --- spaces and versions ------------------------------------------------------------------


# What this process last wrote to SpaceState per space, and when: the worker calls space_load for
# every task, and the row only needs writing when the answer changes or has grown old.
_recorded_states: dict[str, tuple[tuple[bool, str, str], float]] = {}
STATE_REFRESH_S = 60.0


def _record_state(key: str, *, available: bool, reason: str = "", model_id: str = "") -> None:
    state = (available, reason, model_id[:300])
    last = _recorded_states.get(key)
    if last and last[0] == state and time.monotonic() - last[1] < STATE_REFRESH_S:
        return
    SpaceState.objects.update_or_create(
        key=key, defaults={"available": available, "reason": reason, "checked_at": timezone.now(),
                           "model_id": model_id[:300]},
    )  # fmt: skip
    _recorded_states[key] = (state, time.monotonic())


def space_states_forget() -> None:
    """Make the next :func:`space_load` write its state again (tests that empty the tables)."""
    _recorded_states.clear()


def space_load(key: str) -> Embedder:
    """Load a space in this process, record whether it is available, and register its version.

    Raises :class:`SpaceUnavailable` (recorded with its reason) when it cannot be used.
    """
    embedder = embedders.get(key)
    try:
        embedders.load(key)
    except SpaceUnavailable as exc:
        _record_state(key, available=False, reason=exc.reason, model_id=embedder.model_id)
        raise
    # The runtime goes with the model: the admin shows "… · onnx", or why ONNX Runtime is not used.
    _record_state(key, available=True, model_id=f"{embedder.model_id} · {embedder.runtime_label}")
    version_register(space=key, version=embedder.version, dimension=embedder.dimension)
    return embedder


def version_register(*, space: str, version: str, dimension: int) -> SpaceVersion:
    """Make sure a (space, version) exists with its index. The first version of a space is active at once;
    later ones are built beside it and activated by :func:`version_activate_if_complete`."""
    existing = SpaceVersion.objects.filter(space=space, version=version).first()
    # index_name records which store prepared it: after a switch of store, the new one prepares its own.
    if existing and existing.index_name == get_store().storage_name(space=space, version=version):
        return existing
    with transaction.atomic():
        has_active = SpaceVersion.objects.select_for_update().filter(space=space, state="active").exists()
        row, _ = SpaceVersion.objects.get_or_create(
            space=space, version=version,
            defaults={"dimension": dimension,
                      "state": SpaceVersion.State.BUILDING if has_active else SpaceVersion.State.ACTIVE,
                      "activated_at": None if has_active else timezone.now()},
        )  # fmt: skip
    is_text = embedders.is_text_only(space)
    get_store().ensure_version(space=space, version=version, dimension=dimension, products=is_text)
    row.refresh_from_db()
    return row


def active_version(space: str) -> SpaceVersion | None:
    return SpaceVersion.objects.filter(space=space, state=SpaceVersion.State.ACTIVE).first()


def version_activate_if_complete(*, space: str) -> SpaceVersion | None:
    """Switch search to the newest building version once every image has a vector (or a failure) in it.

    Search reads one version at a time, so it never mixes vectors of two models and
    never goes dark: the old version serves until the new one is complete.
    """
    building = SpaceVersion.objects.filter(space=space, state=SpaceVersion.State.BUILDING).order_by("-created_at")
    candidate = building.first()
    if candidate is None:
        return None
    if embedders.is_text_only(space):
        missing = Product.objects.exclude(Exists(ProductEmbedding.objects.filter(
            product=OuterRef("pk"), space=space, model_version=candidate.version)))  # fmt: skip
        if missing.exists():
            return None
    elif _missing_images(space, candidate.version).exists():
        return None
    with transaction.atomic():
        retired = list(SpaceVersion.objects.select_for_update().filter(space=space).exclude(pk=candidate.pk))
        SpaceVersion.objects.filter(pk__in=[r.pk for r in retired]).update(state=SpaceVersion.State.RETIRED)
        SpaceVersion.objects.filter(pk=candidate.pk).update(state=SpaceVersion.State.ACTIVE,
                                                            activated_at=timezone.now())  # fmt: skip
    for old in retired:
        get_store().drop_version(space=space, version=old.version)
    logger.info("space %s switched to version %s", space, candidate.version)
    candidate.refresh_from_db()
    return candidate


# --- counts ----------------------------------------------------------------------------------


def _images_with(space: str, version: str, *statuses: str) -> Any:
    return ImageEmbedding.objects.filter(image=OuterRef("pk"), space=space, model_version=version,
                                         status__in=statuses)  # fmt: skip


def _missing_images(space: str, version: str) -> QuerySet[ProductImage]:
    """Images with neither a vector nor a recorded failure in this version."""
    return ProductImage.objects.exclude(
        Exists(_images_with(space, version, EmbeddingStatus.OK, EmbeddingStatus.FAILED))
    )


def current_version(space: str) -> str | None:
    """The version workers compute now: the newest registered one."""
    row = SpaceVersion.objects.filter(space=space).exclude(state=SpaceVersion.State.RETIRED).order_by(
        "-created_at").first()  # fmt: skip
    return row.version if row else None


@dataclass
class SpaceCounts:
    total: int
    present: int
    missing: int
    stale: int
    failed: int


def space_counts(space: str) -> SpaceCounts:
    """Counts for the admin: present/failed in the current version, stale = only an older version.

    Image spaces count images; text spaces count products (stale also covers edited text).
    """
    if embedders.is_text_only(space):
        return _text_space_counts(space)
    total = ProductImage.objects.count()
    version = current_version(space)
    if version is None:
        return SpaceCounts(total=total, present=0, missing=total, stale=0, failed=0)
    ok = ProductImage.objects.filter(Exists(_images_with(space, version, EmbeddingStatus.OK)))
    failed = ProductImage.objects.filter(Exists(_images_with(space, version, EmbeddingStatus.FAILED)))
    older = ImageEmbedding.objects.filter(image=OuterRef("pk"), space=space, status=EmbeddingStatus.OK).exclude(
        model_version=version)  # fmt: skip
    missing = _missing_images(space, version)
    stale = missing.filter(Exists(older)).count()
    return SpaceCounts(total=total, present=ok.count(), failed=failed.count(), stale=stale,
                       missing=missing.count() - stale)  # fmt: skip


def _text_space_counts(space: str) -> SpaceCounts:
    total = Product.objects.count()
    version = current_version(space)
    if version is None:
        return SpaceCounts(total=total, present=0, missing=total, stale=0, failed=0)
    rows = ProductEmbedding.objects.filter(space=space, model_version=version)
    current = {pk: h for pk, h in rows.filter(status=EmbeddingStatus.OK).values_list("product_id", "source_hash")}
    failed = rows.filter(status=EmbeddingStatus.FAILED).count()
    present = stale = 0
    for product in Product.objects.only("id", "title", "description"):
        if product.pk in current:
            if current[product.pk] == hashlib.sha256(product_text(product).encode()).hexdigest():
                present += 1
            else:
                stale += 1
    older = ProductEmbedding.objects.filter(space=space).exclude(model_version=version).exclude(
        product_id__in=list(current)).values("product_id").distinct().count()  # fmt: skip
    stale += older
    return SpaceCounts(total=total, present=present, missing=max(0, total - present - stale - failed), stale=stale,
                       failed=failed)  # fmt: skip


# --- computing vectors --------------------------------------------------------------------------


def validate_vectors(vectors: np.ndarray, *, dimension: int) -> np.ndarray:
    """Right shape, finite, non-zero; returns float32."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dimension:
        raise InvalidVector(f"expected vectors of dimension {dimension}, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidVector("the model produced NaN or infinite values")
    if (np.linalg.norm(array, axis=1) < 1e-6).any():
        raise InvalidVector("the model produced an all-zero vector")
    return array


def load_image_rgb(image: ProductImage, embedder: Embedder | None = None) -> Any:
    """Decode a stored original to normalised RGB, or raise :class:`ImageUnreadable`.

    For ``embedder``, JPEGs decode at the smallest scale its preprocessing needs (draft mode);
    without one, at least 448 px on the short side.
    """
    long_side, short_side = embedder.decode_sides() if embedder is not None else (0, 448)
    try:
        with default_storage.open(str(image.file.name), "rb") as fh:
            data = fh.read()
        return imaging.open_rgb(data, long_side=long_side, short_side=short_side)
    except FileNotFoundError:
        raise ImageUnreadable(f"the file {image.file.name} is missing from storage") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageUnreadable(f"the stored file cannot be decoded: {exc}") from None


def _record_failure(*, image_id: int, space: str, version: str, reason: str) -> int:
    """Count a failed attempt and keep the reason; the image counts as failed until a later attempt succeeds."""
    row, _ = ImageEmbedding.objects.get_or_create(
        image_id=image_id, space=space, model_version=version,
        defaults={"status": EmbeddingStatus.FAILED, "vector": None, "attempts": 0},
    )  # fmt: skip
    if row.status == EmbeddingStatus.OK and row.vector is not None:
        return row.attempts
    row.attempts += 1
    row.error = reason[:2000]
    row.status = EmbeddingStatus.FAILED
    row.vector = None
    row.save()
    return row.attempts


def image_embed(*, image_id: int, space: str, force: bool = False) -> str:
    """Embed one image in one space; idempotent. Returns "ok", "exists", "skipped" or "failed".

    A missing or undecodable file is failed at once; other errors propagate so the
    task can retry (with :func:`image_embed_failed` recording each attempt).
    """
    try:
        embedder = space_load(space)
    except SpaceUnavailable as exc:
        logger.info("space %s unavailable, image %s skipped: %s", space, image_id, exc.reason)
        return "skipped"
    image = ProductImage.objects.filter(pk=image_id).first()
    if image is None:
        return "skipped"  # deleted since it was queued
    version = embedder.version
    if not force and ImageEmbedding.objects.filter(image_id=image_id, space=space, model_version=version,
                                                   status=EmbeddingStatus.OK).exists():  # fmt: skip
        return "exists"
    try:
        rgb = load_image_rgb(image, embedder)
    except ImageUnreadable as exc:
        _record_failure(image_id=image_id, space=space, version=version, reason=str(exc))
        return "failed"
    vectors = validate_vectors(embedder.encode_batch([embedder.preprocess(rgb)]), dimension=embedder.dimension)
    get_store().upsert_images(space=space, version=version, items=[(image_id, vectors[0])])
    version_activate_if_complete(space=space)
    return "ok"


def image_embed_failed(*, image_id: int, space: str, reason: str) -> None:
    """Record a failed attempt (the task calls this on every error, before it retries or gives up)."""
    embedder = embedders.get(space)
    version = embedder.version if embedder.loaded else current_version(space)
    if version:
        _record_failure(image_id=image_id, space=space, version=version, reason=reason)


def product_text(product: Product) -> str:
    return f"{product.title}\n{product.description}".strip()


def product_embed(*, product_id: int, space: str) -> str:
    """Embed a product's title + description in a text space; skips when the text has not changed."""
    try:
        embedder = space_load(space)
    except SpaceUnavailable:
        return "skipped"
    product = Product.objects.filter(pk=product_id).first()
    if product is None:
        return "skipped"
    text = product_text(product)
    source_hash = hashlib.sha256(text.encode()).hexdigest()
    if ProductEmbedding.objects.filter(product=product, space=space, model_version=embedder.version,
                                       source_hash=source_hash, status=EmbeddingStatus.OK).exists():  # fmt: skip
        return "exists"
    vector = validate_vectors(embedder.embed_texts([text]), dimension=embedder.dimension)[0]
    get_store().upsert_products(space=space, version=embedder.version, items=[(product.pk, vector, source_hash)])
    version_activate_if_complete(space=space)
    return "ok"


# --- bulk ------------------------------------------------------------------------------------------


@dataclass
class BulkResult:
    processed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)


def _decoded(embedder: Embedder, images: Sequence[ProductImage], workers: int,
             window: int) -> Iterator[tuple[int, Any]]:  # fmt: skip
    """Decode + preprocess in a thread pool, yielding in order; errors come back as exceptions.

    At most ``window`` images are in flight, so a million-image reindex holds a few batches in memory,
    not the whole catalogue's pixels.
    """

    def work(image: ProductImage) -> Any:
        try:
            return embedder.preprocess(load_image_rgb(image, embedder))
        except ImageUnreadable as exc:
            return exc

    pending: deque[tuple[int, Future[Any]]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        for image in images:
            pending.append((image.pk, pool.submit(work, image)))
            if len(pending) >= window:
                pk, future = pending.popleft()
                yield pk, future.result()
        while pending:
            pk, future = pending.popleft()
            yield pk, future.result()


def image_batches(embedder: Embedder, images: Sequence[ProductImage], batch_size: int,
             workers: int, ahead: int = 2) -> Iterator[list[tuple[int, Any]]]:  # fmt: skip
    """Batches of decoded images, produced by a background thread so decoding overlaps inference.

    Up to ``ahead`` decoded batches wait for the consumer (enough to keep every encoding stream fed).
    """
    out: queue.Queue[list[tuple[int, Any]] | BaseException | None] = queue.Queue(maxsize=ahead)

    def produce() -> None:
        try:
            batch: list[tuple[int, Any]] = []
            for item in _decoded(embedder, images, workers, window=2 * batch_size):
                batch.append(item)
                if len(batch) == batch_size:
                    out.put(batch)
                    batch = []
            if batch:
                out.put(batch)
            out.put(None)
        except BaseException as exc:  # surface in the consumer
            out.put(exc)

    thread = threading.Thread(target=produce, name="reindex-decoder", daemon=True)
    thread.start()
    while True:
        item = out.get()
        if item is None:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    thread.join()


def encoded_batches(embedder: Embedder, images: Sequence[ProductImage], batch_size: int,
                    workers: int) -> Iterator[tuple[list[tuple[int, Any]], Future[np.ndarray] | None]]:  # fmt: skip
    """Each decoded batch with the forward pass of its readable images, oldest first.

    The model runs the newest batches in its own threads, ``embedder.streams`` at once (ONNX Runtime and
    torch release the GIL), while the caller handles the oldest finished one: in a reindex the database's
    share of the work (the HNSW insertions) overlaps the forward passes, and the database stays on the
    caller's thread. The future is None for a batch with nothing readable.
    """
    streams = max(1, embedder.streams)
    pending: deque[tuple[list[tuple[int, Any]], Future[np.ndarray] | None]] = deque()
    with ThreadPoolExecutor(max_workers=streams, thread_name_prefix=f"encode-{embedder.key}") as model:
        for batch in image_batches(embedder, images, batch_size, workers, ahead=streams + 1):
            good = [item for _, item in batch if not isinstance(item, ImageUnreadable)]
            pending.append((batch, model.submit(embedder.encode_batch, good) if good else None))
            if len(pending) > streams:
                yield pending.popleft()
        while pending:
            yield pending.popleft()


def images_embed_bulk(
    *, space: str, image_ids: Iterable[int] | None = None, missing_only: bool = False, batch_size: int | None = None,
    progress: Callable[[int], None] | None = None, decode_workers: int | None = None,
    embedder: Embedder | None = None, activate: bool = True,
) -> BulkResult:  # fmt: skip
    """Embed many images in batches, decoding the next batch while the model runs the current one.

    ``image_ids=None`` means every image. ``missing_only`` skips images that already have
    a vector (or a recorded failure) in the current version. ``progress(n)`` is called
    after each batch with the number of images it covered. ``decode_workers`` defaults to
    ``settings.VITRINE_DECODE_THREADS``; the batch size to the space's ``BATCH_SIZE``.
    ``embedder`` (already loaded) replaces the space's configured one, and ``activate=False`` leaves the
    version building even when complete: ``manage.py quantize`` builds an int8 trial version that way.
    """
    if embedder is None:
        embedder = space_load(space)
    else:
        version_register(space=space, version=embedder.version, dimension=embedder.dimension)
    version = embedder.version
    images = ProductImage.objects.only("id", "file").order_by("id")
    if image_ids is not None:
        images = images.filter(pk__in=list(image_ids))
    if missing_only:
        images = images.filter(pk__in=_missing_images(space, version).values("pk"))
    rows = list(images)
    result = BulkResult()
    size = batch_size or embedder.batch_size
    workers = decode_workers or settings.VITRINE_DECODE_THREADS

    for batch, encoded in encoded_batches(embedder, rows, size, workers):
        good = []
        for pk, item in batch:
            if isinstance(item, ImageUnreadable):
                _record_failure(image_id=pk, space=space, version=version, reason=str(item))
                result.failed += 1
                result.failures.append((pk, str(item)))
            else:
                good.append(pk)
        if encoded is not None:
            vectors = validate_vectors(encoded.result(), dimension=embedder.dimension)
            get_store().upsert_images(space=space, version=version, items=list(zip(good, vectors, strict=True)))
            result.processed += len(good)
        if progress:
            progress(len(batch))
    if activate:
        version_activate_if_complete(space=space)
    return result


def products_embed_bulk(*, space: str, product_ids: Iterable[int] | None = None, missing_only: bool = False,
                        progress: Callable[[int], None] | None = None) -> BulkResult:  # fmt: skip
    """Embed product texts in a text space, in batches."""
    embedder = space_load(space)
    products = Product.objects.order_by("id")
    if product_ids is not None:
        products = products.filter(pk__in=list(product_ids))
    rows = list(products)
    if missing_only:
        current = ProductEmbedding.objects.filter(
            space=space, model_version=embedder.version, status=EmbeddingStatus.OK
        )
        done = set(current.values_list("product_id", "source_hash"))
        rows = [p for p in rows if (p.pk, hashlib.sha256(product_text(p).encode()).hexdigest()) not in done]
    result = BulkResult()
    for start in range(0, len(rows), embedder.batch_size):
        chunk = rows[start : start + embedder.batch_size]
        texts = [product_text(p) for p in chunk]
        vectors = validate_vectors(embedder.embed_texts(texts), dimension=embedder.dimension)
        get_store().upsert_products(space=space, version=embedder.version, items=[
            (product.pk, vector, hashlib.sha256(text.encode()).hexdigest())
            for product, text, vector in zip(chunk, texts, vectors, strict=True)
        ])  # fmt: skip
        result.processed += len(chunk)
        if progress:
            progress(len(chunk))
    version_activate_if_complete(space=space)
    return result


# --- the vector store ----------------------------------------------------------------------------------


def vectorstore_rebuild(*, spaces: Sequence[str] | None = None,
                        progress: Callable[[str, int], None] | None = None) -> dict[str, int]:  # fmt: skip
    """Recreate the vector store's copy of every live (active or building) version from Postgres.

    For Milvus: drop and reload each collection in batches, the index built once after
    the load. For pgvector the rows *are* the store, so only missing indexes are created.
    Returns vectors loaded per "space version".
    """
    store = get_store()
    loaded: dict[str, int] = {}
    versions = SpaceVersion.objects.exclude(state=SpaceVersion.State.RETIRED).order_by("space", "created_at")
    if spaces:
        versions = versions.filter(space__in=list(spaces))
    for row in versions:
        is_text = embedders.is_text_only(row.space)
        store.ensure_version(space=row.space, version=row.version, dimension=row.dimension, products=is_text)
        n = store.rebuild(space=row.space, version=row.version, dimension=row.dimension, products=is_text)
        loaded[f"{row.space} {row.version}"] = n
        if progress:
            progress(f"{row.space} {row.version}", n)
    return loaded


# --- reindex jobs and the sweep --------------------------------------------------------------------


def _job_selection(job: ReindexJob) -> QuerySet[Any]:
    """The ids a job covers, in id order: products for a text space, images otherwise.

    Up to ``job.upper_id`` once the job has started; ``missing_only`` is judged when each chunk is planned
    and again when it runs, so what finished meanwhile is not done twice.
    """
    rows: QuerySet[Any]
    if embedders.is_text_only(job.space):
        rows = Product.objects.all()
        if job.product_ids is not None:
            rows = rows.filter(pk__in=job.product_ids)
    else:
        rows = ProductImage.objects.all()
        if job.product_ids is not None:
            rows = rows.filter(product_id__in=job.product_ids)
        if job.missing_only:
            version = current_version(job.space) or space_load(job.space).version
            # NOT EXISTS on the image itself: walking the id index, a chunk's query stops after its ids.
            rows = rows.exclude(Exists(_images_with(job.space, version, EmbeddingStatus.OK, EmbeddingStatus.FAILED)))
    if job.upper_id is not None:
        rows = rows.filter(pk__lte=job.upper_id)
    return rows.order_by("pk").values_list("pk", flat=True)


def reindex_job_create(*, space: str, missing_only: bool = False, product_ids: list[int] | None = None,
                       requested_by: Any = None) -> ReindexJob:  # fmt: skip
    """Queue a reindex of one space (all images, missing ones, or some products' images)."""
    from search import tasks

    if space not in settings.VITRINE_SPACES:
        raise ValueError(f"unknown space {space!r}")
    user = requested_by if getattr(requested_by, "pk", None) else None
    job = ReindexJob.objects.create(space=space, missing_only=missing_only, product_ids=product_ids,
                                    requested_by=user)  # fmt: skip
    # With the broker down the job is still recorded, and the sweep queues it later (reindex_jobs_resume_stalled).
    transaction.on_commit(lambda: _enqueue_safely(tasks.reindex_job_task, job.pk), robust=True)
    return job


def _job_fail(job: ReindexJob, reason: str) -> None:
    ReindexJob.objects.filter(pk=job.pk).update(status=ReindexJob.Status.FAILED, error=reason,
                                                finished_at=timezone.now())  # fmt: skip


def reindex_job_plan(*, job_id: int) -> ReindexJob:
    """Start a queued job: fix the ids it covers (up to the largest now) and count them; mark it running.

    Nothing is listed here: chunks are planned as the job goes (``reindex_job_queue_chunks``), so a job
    over hundreds of millions of images starts at once and keeps a window of chunk rows, not a list of
    every id. Safe to call again for the same job (a redelivered message): it starts once.
    """
    job = ReindexJob.objects.get(pk=job_id)
    if job.status != ReindexJob.Status.QUEUED:
        return job
    try:
        space_load(job.space)  # fail early, with the reason, when the model cannot be had
        selection = _job_selection(job)
        upper = selection.order_by("-pk").first()
        total, estimated = _job_size(selection.filter(pk__lte=upper)) if upper is not None else (0, False)
    except SpaceUnavailable as exc:
        _job_fail(job, exc.reason)
        job.refresh_from_db()
        return job
    now = timezone.now()
    ReindexJob.objects.filter(pk=job.pk, status=ReindexJob.Status.QUEUED).update(
        status=ReindexJob.Status.RUNNING, started_at=now, heartbeat_at=now, total=total, processed=0,
        upper_id=upper, cursor=None, planned_all=upper is None, total_estimated=estimated,
    )  # fmt: skip
    _job_finish_if_complete(job.pk)  # a job with nothing to do is done at once
    job.refresh_from_db()
    return job


def _job_size(selection: QuerySet[Any]) -> tuple[int, bool]:
    """(how many ids, whether that is an estimate). Counted exactly up to ``VITRINE_REINDEX_COUNT_MAX``;
    beyond, Postgres' planner estimates it: counting hundreds of millions of rows (an anti-join, for a
    missing-only job) could outlast the start task's time limit, and the job would never start."""
    limit = max(1, settings.VITRINE_REINDEX_COUNT_MAX)
    counted = selection[: limit + 1].count()
    if counted <= limit:
        return counted, False
    plan = json.loads(selection.explain(format="json"))
    return max(counted, int(plan[0]["Plan"]["Plan Rows"])), True


def _plan_next_chunk(job: ReindexJob) -> ReindexChunk | None:
    """The job's next chunk: the next ``VITRINE_REINDEX_CHUNK`` ids after the cursor. Call with the job's
    row locked (``select_for_update``); ``job`` is updated in memory and in the database. None: all planned."""
    if job.planned_all:
        return None
    size = max(1, settings.VITRINE_REINDEX_CHUNK)
    rows = _job_selection(job)
    if job.cursor is not None:
        rows = rows.filter(pk__gt=job.cursor)
    ids = list(rows[:size])
    if not ids:
        job.planned_all = True
        ReindexJob.objects.filter(pk=job.pk).update(planned_all=True)
        return None
    # Chunks are numbered 0, 1, 2… in the order they are planned (the last number: one index probe).
    last = ReindexChunk.objects.filter(job=job).order_by("-number").values_list("number", flat=True).first()
    number = 0 if last is None else last + 1
    chunk = ReindexChunk.objects.create(job=job, number=number, first_id=ids[0], last_id=ids[-1], size=len(ids))
    job.cursor = ids[-1]
    ReindexJob.objects.filter(pk=job.pk).update(cursor=job.cursor)
    return chunk


def reindex_chunk_run(*, chunk_id: int, queue_next: bool = False) -> ReindexChunk:
    """Embed one chunk of a job. Running a chunk twice stores the same vectors and counts once.

    ``queue_next`` (the worker's way): the chunk that records its completion plans and queues the next.
    """
    chunk = ReindexChunk.objects.select_related("job").get(pk=chunk_id)
    job = chunk.job
    if chunk.done_at is not None or job.status != ReindexJob.Status.RUNNING:
        return chunk
    try:
        ids = list(_job_selection(job).filter(pk__gte=chunk.first_id, pk__lte=chunk.last_id))
        if embedders.is_text_only(job.space):
            result = products_embed_bulk(space=job.space, product_ids=ids, missing_only=job.missing_only)
        else:
            result = images_embed_bulk(space=job.space, image_ids=ids, missing_only=job.missing_only)
    except SpaceUnavailable as exc:
        _job_fail(job, exc.reason)
        return chunk
    with transaction.atomic():
        first = ReindexChunk.objects.filter(pk=chunk.pk, done_at__isnull=True).update(
            done_at=timezone.now(), processed=chunk.size, failed=result.failed
        )
        if first:
            ReindexJob.objects.filter(pk=job.pk).update(processed=F("processed") + chunk.size,
                                                        failed=F("failed") + result.failed,
                                                        heartbeat_at=timezone.now())  # fmt: skip
    if first and queue_next:
        reindex_job_queue_chunks(job_id=job.pk, after=chunk.number)
    _job_finish_if_complete(job.pk)
    chunk.refresh_from_db()
    return chunk


def reindex_chunk_failed(*, chunk_id: int, reason: str) -> None:
    """A chunk hit an error that retrying will not fix: the job stops with the reason (staff can rerun it)."""
    chunk = ReindexChunk.objects.select_related("job").get(pk=chunk_id)
    logger.error("reindex job #%s failed in chunk %s: %s", chunk.job_id, chunk.number, reason)
    _job_fail(chunk.job, f"chunk {chunk.number}: {reason}"[:2000])


def _job_finish_if_complete(job_id: int) -> None:
    job = ReindexJob.objects.get(pk=job_id)
    if not job.planned_all or ReindexChunk.objects.filter(job_id=job_id, done_at__isnull=True).exists():
        return
    done = ReindexJob.objects.filter(pk=job_id, status=ReindexJob.Status.RUNNING)
    if job.total_estimated:  # now it is known
        updated = done.update(status=ReindexJob.Status.DONE, finished_at=timezone.now(), total=F("processed"),
                              total_estimated=False)  # fmt: skip
    else:  # counted at the start but not planned: deleted since, or (missing only) embedded meanwhile by uploads
        updated = done.update(status=ReindexJob.Status.DONE, finished_at=timezone.now(),
                              skipped=Greatest(F("total") - F("processed"), 0))  # fmt: skip
    if updated:
        version_activate_if_complete(space=job.space)


def reindex_job_pending_chunks(*, job_id: int) -> list[int]:
    """Ids of the job's planned chunks not yet done, in order."""
    pending = ReindexChunk.objects.filter(job_id=job_id, done_at__isnull=True).order_by("number")
    return list(pending.values_list("pk", flat=True))


def reindex_job_queue_chunks(*, job_id: int, after: int | None = None) -> int:
    """Keep ``VITRINE_REINDEX_WINDOW`` chunks of a running job in flight, planning new ones as needed.

    Called when the job starts and when its chunks stall (``after=None``: the pending chunks are queued
    again, their messages may be lost, and new ones planned up to the window) and by every chunk that
    finishes (``after``: its number; only newly planned chunks are queued). Only a short window is ever in
    the queue, so uploads queued meanwhile are embedded within a chunk's time, not after the job.
    Returns how many chunks were queued.
    """
    from search import tasks

    window = max(1, settings.VITRINE_REINDEX_WINDOW)
    with transaction.atomic():
        job = ReindexJob.objects.select_for_update().get(pk=job_id)  # one planner at a time per job
        if job.status != ReindexJob.Status.RUNNING:
            return 0
        pending = reindex_job_pending_chunks(job_id=job_id)
        planned: list[int] = []
        while len(pending) + len(planned) < window:
            chunk = _plan_next_chunk(job)
            if chunk is None:
                break
            planned.append(chunk.pk)
        ids = planned if after is not None else pending[:window] + planned

        def enqueue() -> None:  # after commit: a worker must find the chunk rows
            for pk in ids:
                _enqueue_safely(tasks.reindex_chunk_task, pk)

        transaction.on_commit(enqueue, robust=True)
    if job.planned_all:
        _job_finish_if_complete(job_id)
    return len(ids)


def reindex_job_run(*, job_id: int) -> ReindexJob:
    """Run a job to the end in this process (tests, scripts); the worker runs the same steps as tasks."""
    job = reindex_job_plan(job_id=job_id)
    while job.status == ReindexJob.Status.RUNNING:
        pending = reindex_job_pending_chunks(job_id=job.pk)
        if not pending:
            with transaction.atomic():
                chunk = _plan_next_chunk(ReindexJob.objects.select_for_update().get(pk=job.pk))
            if chunk is None:
                _job_finish_if_complete(job.pk)
                job.refresh_from_db()
                break
            pending = [chunk.pk]
        for pk in pending:
            reindex_chunk_run(chunk_id=pk)
        job.refresh_from_db()
    return job


def reindex_jobs_resume_stalled(*, older_than_s: int | None = None) -> list[int]:
    """Queue again the jobs that stopped making progress: a running job's chunks, a queued job's start.

    A killed worker's chunk comes back by itself after the broker's visibility timeout; this catches
    messages that were lost outright (a broker that crashed before writing them to disk, or that was down
    when staff asked for the job). The sweep leaves a space to its active job, so no job may stay stuck.
    """
    from search import tasks

    age = older_than_s if older_than_s is not None else settings.VITRINE_REINDEX_STALL_S
    before = timezone.now() - timedelta(seconds=age)
    resumed = []
    for job in ReindexJob.objects.filter(status=ReindexJob.Status.QUEUED, created_at__lt=before):
        # Starting is idempotent (reindex_job_plan starts a job once), so a duplicate message is harmless.
        _enqueue_safely(tasks.reindex_job_task, job.pk)
        resumed.append(job.pk)
        logger.warning("reindex job #%s was still waiting to start after %s s; queued it again", job.pk, age)
    for job in ReindexJob.objects.filter(status=ReindexJob.Status.RUNNING, heartbeat_at__lt=before):
        ReindexJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())
        if reindex_job_queue_chunks(job_id=job.pk):
            resumed.append(job.pk)
            logger.warning("reindex job #%s made no progress for %s s; queued its next chunks again", job.pk, age)
    return resumed


def _full_job_active(space: str) -> bool:
    """A queued or running reindex job over the whole space: it covers whatever the sweep would queue."""
    active = [ReindexJob.Status.QUEUED, ReindexJob.Status.RUNNING]
    return ReindexJob.objects.filter(space=space, product_ids__isnull=True, status__in=active).exists()


def sweep(*, spaces: Sequence[str] | None = None, batch: int = 64) -> dict[str, int]:
    """Queue embedding for images (and product texts) whose vectors are missing or stale.

    "Missing or stale" is judged against the version each space computes now. Spaces
    that never loaded anywhere are probed here first so their version is known.
    Failures are not retried by the sweep; staff reindex them on purpose.

    Each run looks at no more than ``VITRINE_SWEEP_MAX`` ids per space. A bigger backlog (a new model
    version, a bulk import while the worker was down) becomes one missing-only reindex job, chunked,
    resumable and shown in the admin, and later runs leave the space to that job while it is active:
    the sweep never lists a whole catalogue in one process nor queues the same backlog twice.
    Returns per space the ids queued; more than ``VITRINE_SWEEP_MAX`` means a job took the backlog over.
    """
    from search import tasks

    limit = max(1, settings.VITRINE_SWEEP_MAX)
    queued: dict[str, int] = {}
    for space in spaces or embedders.enabled():
        if _full_job_active(space):
            queued[space] = 0
            continue
        version = current_version(space)
        if version is None:
            try:
                version = space_load(space).version
            except SpaceUnavailable:
                queued[space] = 0
                continue
        is_text = embedders.is_text_only(space)
        stale: QuerySet[Any]
        if is_text:
            stale = Product.objects.exclude(Exists(ProductEmbedding.objects.filter(
                product=OuterRef("pk"), space=space, model_version=version)))  # fmt: skip
        else:
            stale = _missing_images(space, version)
        ids = list(stale.order_by("pk").values_list("pk", flat=True)[: limit + 1])
        queued[space] = len(ids)
        if len(ids) > limit:
            job = reindex_job_create(space=space, missing_only=True)
            logger.info("sweep: more than %s %s lack a %s vector; reindex job #%s takes them over", limit,
                        "products" if is_text else "images", space, job.pk)  # fmt: skip
        elif is_text:
            for pk in ids:
                tasks.product_embed_task.delay(pk, space)
        else:
            for start in range(0, len(ids), batch):
                tasks.images_embed_batch_task.delay(ids[start : start + batch], space)
    reindex_jobs_resume_stalled()
    return queued
