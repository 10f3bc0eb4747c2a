"""Embedding many items at once (reindex chunks, the sweep's batches, ``reindex --sync``), and reloading the
vector store from Postgres.

Images are decoded in a thread pool while the model encodes earlier batches in threads of its own
(``embedder.streams`` at once), and the caller's thread writes finished batches to the database.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings

from catalog.models import Product, ProductImage
from search import embedders
from search.embedders import Embedder
from search.indexing.colouring import Colours, image_colours_compute, image_colours_save, images_without_colours
from search.indexing.embedding import image_failure_record, validate_vectors
from search.indexing.sources import ImageUnreadable, load_image_rgb, product_text, product_text_hash
from search.indexing.versions import missing_images, space_load, version_activate_if_complete, version_register
from search.models import EmbeddingStatus, ProductEmbedding, SpaceVersion
from search.vectorstores import get_store


@dataclass
class BulkResult:
    processed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)


OnDecoded = Callable[[int, Any], None]


def _decoded(embedder: Embedder, images: Sequence[ProductImage], workers: int, window: int,
             on_decoded: OnDecoded | None = None) -> Iterator[tuple[int, Any]]:  # fmt: skip
    """Decode + preprocess in a thread pool, yielding in order; errors come back as exceptions.

    At most ``window`` images are in flight, so a million-image reindex holds a few batches in memory,
    not the whole catalogue's pixels. ``on_decoded(image_id, rgb)`` runs in the decode thread too.
    """

    def work(image: ProductImage) -> Any:
        try:
            rgb = load_image_rgb(image, embedder)
        except ImageUnreadable as exc:
            return exc
        if on_decoded is not None:
            on_decoded(image.pk, rgb)
        return embedder.preprocess(rgb)

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


def image_batches(embedder: Embedder, images: Sequence[ProductImage], batch_size: int, workers: int, ahead: int = 2,
                  on_decoded: OnDecoded | None = None) -> Iterator[list[tuple[int, Any]]]:  # fmt: skip
    """Batches of decoded images, produced by a background thread so decoding overlaps inference.

    Up to ``ahead`` decoded batches wait for the consumer (enough to keep every encoding stream fed).
    """
    out: queue.Queue[list[tuple[int, Any]] | BaseException | None] = queue.Queue(maxsize=ahead)

    def produce() -> None:
        try:
            batch: list[tuple[int, Any]] = []
            for item in _decoded(embedder, images, workers, window=2 * batch_size, on_decoded=on_decoded):
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


def encoded_batches(embedder: Embedder, images: Sequence[ProductImage], batch_size: int, workers: int,
                    on_decoded: OnDecoded | None = None,
                    ) -> Iterator[tuple[list[tuple[int, Any]], Future[np.ndarray] | None]]:  # fmt: skip
    """Each decoded batch with the forward pass of its readable images, oldest first.

    The model runs the newest batches in its own threads, ``embedder.streams`` at once (ONNX Runtime and
    torch release the GIL), while the caller handles the oldest finished one: in a reindex the database's
    share of the work (the HNSW insertions) overlaps the forward passes, and the database stays on the
    caller's thread. The future is None for a batch with nothing readable.
    """
    streams = max(1, embedder.streams)
    pending: deque[tuple[list[tuple[int, Any]], Future[np.ndarray] | None]] = deque()
    with ThreadPoolExecutor(max_workers=streams, thread_name_prefix=f"encode-{embedder.key}") as model:
        for batch in image_batches(embedder, images, batch_size, workers, ahead=streams + 1, on_decoded=on_decoded):
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
        images = images.filter(pk__in=missing_images(space, version).values("pk"))
    rows = list(images)
    result = BulkResult()
    size = batch_size or embedder.batch_size
    workers = decode_workers or settings.VITRINE_DECODE_THREADS

    # Pictures without colours get them from the same decoding (computed in the decode threads).
    uncoloured = images_without_colours(image_ids=[row.pk for row in rows])
    colours: dict[int, Colours] = {}

    def colour(image_id: int, rgb: Any) -> None:
        if image_id in uncoloured:
            colours[image_id] = image_colours_compute(image=rgb)

    for batch, encoded in encoded_batches(embedder, rows, size, workers, on_decoded=colour):
        image_colours_save(colours={pk: colours.pop(pk) for pk, _ in batch if pk in colours})
        good = []
        for pk, item in batch:
            if isinstance(item, ImageUnreadable):
                image_failure_record(image_id=pk, space=space, version=version, reason=str(item))
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
        rows = [p for p in rows if (p.pk, product_text_hash(product_text(p))) not in done]
    result = BulkResult()
    for start in range(0, len(rows), embedder.batch_size):
        chunk = rows[start : start + embedder.batch_size]
        texts = [product_text(p) for p in chunk]
        vectors = validate_vectors(embedder.embed_texts(texts), dimension=embedder.dimension)
        get_store().upsert_products(space=space, version=embedder.version, items=[
            (product.pk, vector, product_text_hash(text))
            for product, text, vector in zip(chunk, texts, vectors, strict=True)
        ])  # fmt: skip
        result.processed += len(chunk)
        if progress:
            progress(len(chunk))
    version_activate_if_complete(space=space)
    return result


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
