"""Milvus: a copy of the active vectors, with the product fields filters need, in one collection per (space, version).

Postgres stays the source of truth (every vector is written there first, by the
same code as the pgvector store); Milvus serves the searches. Why a collection per
version rather than partitions of one: a collection has one vector dimension, and
a model upgrade may change it; dropping a retired version is then one
``drop_collection``. Within a collection the top-level category is the
*partition key*, so a category filter searches only the partitions that can
match (on a cluster, fewer segments to visit).

``settings.VITRINE_MILVUS_URI`` is a milvus-lite file under ``VITRINE_HOME`` by
default (one process at a time: tests, commands, a single-process demo) or a
Milvus server/cluster URI (``http://milvus:19530``) in production.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from search.models import EmbeddingStatus, ImageColour, ImageEmbedding, ProductEmbedding, SpaceVersion
from search.vectorstores.base import CandidatePool, Filters, ImageHit, VectorStore, VersionRef
from search.vectorstores.candidates import candidate_pool
from search.vectorstores.pgvector import PgVectorStore, images_write, products_write

logger = logging.getLogger(__name__)

INSERT_BATCH = 2000  # rows per insert: well under Milvus's 64 MB gRPC message limit at 4,000 dimensions


def _pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError as exc:
        raise ImproperlyConfigured(
            "VITRINE_VECTOR_STORE names the Milvus store, but pymilvus is not installed "
            f"({exc}); install pymilvus (and milvus-lite for a local file) or use "
            "search.vectorstores.pgvector.PgVectorStore"
        ) from exc
    return pymilvus


def collection_name(space: str, version: str) -> str:
    """Milvus names allow letters, digits and underscores; the version goes in as a hash."""
    prefix = re.sub(r"\W", "_", str(settings.VITRINE_MILVUS_PREFIX))
    key = re.sub(r"\W", "_", space)[:32]
    return f"{prefix}_{key}_{hashlib.sha256(version.encode()).hexdigest()[:12]}"


def _string(value: str) -> str:
    """A Milvus expression string literal (milvus-lite has no filter templating to lean on)."""
    return json.dumps(value)


def like_prefix(prefix: str) -> str:
    """``prefix%`` for ``like``, with ``%``, ``_`` and backslashes in the prefix taken literally."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return _string(escaped + "%")


def filter_expression(*, filters: Filters | None, published_only: bool = True,
                      exclude_product_id: int | None = None) -> str:  # fmt: skip
    """The shopper filters as a Milvus boolean expression on the scalar fields."""
    parts: list[str] = []
    if published_only:
        parts.append("published == true")
    if exclude_product_id is not None:
        parts.append(f"product_id != {int(exclude_product_id)}")
    if filters is not None:
        if filters.category_path:
            path = filters.category_path.strip("/")
            # The root equality lets Milvus prune partitions (root is the partition key); the path is
            # stored with a trailing slash so "shoes" matches "shoes/boots" but not "shoestrings".
            parts.append(f"root == {_string(path.split('/')[0])}")
            parts.append(f"path like {like_prefix(path + '/')}")
        if filters.price_min is not None:
            parts.append(f"price >= {float(filters.price_min)!r}")
        if filters.price_max is not None:
            parts.append(f"price <= {float(filters.price_max)!r}")
        if filters.in_stock:
            parts.append("stock > 0")
        if filters.colour:
            parts.append(f"array_contains(colours, {_string(filters.colour)})")
    return " and ".join(parts)


def _row(pk: int, product_id: int, path: str | None, price: Any, stock: int, published: bool,
         vector: Any) -> dict[str, Any]:  # fmt: skip
    path = (path or "").strip("/")
    return {"id": int(pk), "product_id": int(product_id), "root": path.split("/")[0] if path else "",
            "path": path + "/" if path else "", "price": None if price is None else float(price),
            "stock": int(stock or 0), "published": bool(published), "colours": [],
            "vector": np.asarray(vector, dtype=np.float32)}  # fmt: skip


Rows = Iterator[list[dict[str, Any]]]
MAX_COLOURS = 16


def _with_colours(batches: Rows) -> Rows:
    """Each row gets its product's colours (its field and its pictures'), one query per batch."""
    for batch in batches:
        colours = ImageColour.objects.of_products(sorted({row["product_id"] for row in batch}))
        for row in batch:
            row["colours"] = colours.get(row["product_id"], [])[:MAX_COLOURS]
        yield batch


def image_rows(*, space: str, version: str, image_ids: Sequence[int] | None = None,
               product_ids: Sequence[int] | None = None, chunk: int = INSERT_BATCH) -> Rows:  # fmt: skip
    """Milvus rows for stored image vectors, read from Postgres with the product fields, in chunks."""
    rows = ImageEmbedding.objects.filter(space=space, model_version=version, status=EmbeddingStatus.OK,
                                         vector__isnull=False)  # fmt: skip
    if image_ids is not None:
        rows = rows.filter(image_id__in=list(image_ids))
    if product_ids is not None:
        rows = rows.filter(image__product_id__in=list(product_ids))
    values = rows.order_by("image_id").values_list(
        "image_id", "image__product_id", "image__product__category__path", "image__product__price",
        "image__product__stock", "image__product__is_active", "vector",
    )  # fmt: skip
    yield from _with_colours(_chunked((_row(*r) for r in values.iterator(chunk_size=chunk)), chunk))


def product_rows(*, space: str, version: str, product_ids: Sequence[int] | None = None,
                 chunk: int = INSERT_BATCH) -> Iterator[list[dict[str, Any]]]:  # fmt: skip
    """Milvus rows for a text space: one per product, the id being the product's."""
    rows = ProductEmbedding.objects.filter(space=space, model_version=version, status=EmbeddingStatus.OK,
                                           vector__isnull=False)  # fmt: skip
    if product_ids is not None:
        rows = rows.filter(product_id__in=list(product_ids))
    values = rows.order_by("product_id").values_list(
        "product_id", "product_id", "product__category__path", "product__price", "product__stock",
        "product__is_active", "vector",
    )  # fmt: skip
    yield from _with_colours(_chunked((_row(*r) for r in values.iterator(chunk_size=chunk)), chunk))


def _chunked(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class MilvusStore(VectorStore):
    mirrors_catalog = True

    def __init__(self, uri: str | None = None) -> None:
        self.pymilvus = _pymilvus()
        self.uri = uri or str(settings.VITRINE_MILVUS_URI)
        self._client: Any = None
        self._lock = threading.Lock()
        self._loaded: set[str] = set()
        self._kinds: dict[str, str] = {}

    # -- connection and collections -------------------------------------------------------------
    @property
    def is_lite(self) -> bool:
        return not re.match(r"^[a-z]+://", self.uri)

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                if self.is_lite:
                    Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
                token = str(settings.VITRINE_MILVUS_TOKEN or "")
                self._client = self.pymilvus.MilvusClient(uri=self.uri, token=token)
            return self._client

    def close(self) -> None:
        """Let go of the connection (a milvus-lite file can be opened by one process at a time)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None
            self._loaded.clear()

    def storage_name(self, *, space: str, version: str) -> str:
        return collection_name(space, version)

    def _schema(self, dimension: int) -> Any:
        data_type = self.pymilvus.DataType
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", data_type.INT64, is_primary=True)  # image id, or product id in text spaces
        schema.add_field("product_id", data_type.INT64)
        schema.add_field("root", data_type.VARCHAR, max_length=256, is_partition_key=True)
        schema.add_field("path", data_type.VARCHAR, max_length=1024)
        # Nullable like the column: a product without a price fails any price bound, as in SQL.
        schema.add_field("price", data_type.DOUBLE, nullable=True)
        schema.add_field("stock", data_type.INT64)
        schema.add_field("published", data_type.BOOL)
        schema.add_field("colours", data_type.ARRAY, element_type=data_type.VARCHAR, max_capacity=MAX_COLOURS,
                         max_length=16)  # fmt: skip
        schema.add_field("vector", data_type.FLOAT_VECTOR, dim=dimension)
        return schema

    def _index_params(self) -> Any:
        params = self.client.prepare_index_params()
        index = dict(settings.VITRINE_MILVUS_INDEX)
        params.add_index(field_name="vector", index_type=index.get("index_type", "HNSW"), metric_type="COSINE",
                         params=index.get("params", {}))  # fmt: skip
        return params

    def _create(self, name: str, *, dimension: int, products: bool, with_index: bool) -> None:
        self.client.create_collection(
            name, schema=self._schema(dimension), index_params=self._index_params() if with_index else None,
            num_partitions=int(settings.VITRINE_MILVUS_PARTITIONS), description="products" if products else "images",
            consistency_level=str(settings.VITRINE_MILVUS_CONSISTENCY),
        )  # fmt: skip
        self._kinds[name] = "products" if products else "images"
        if with_index:
            self._loaded.add(name)  # created with an index, Milvus loads it at once

    def _kind(self, name: str) -> str:
        if name not in self._kinds:
            self._kinds[name] = str(self.client.describe_collection(name).get("description") or "images")
        return self._kinds[name]

    def _ready(self, space: str, version: str) -> str | None:
        """The collection's name, loaded for search in this process; None when there is none (like a
        pgvector version without rows: nothing found, and a warning, since a rebuild is probably due)."""
        name = collection_name(space, version)
        if name not in self._loaded:
            if not self.client.has_collection(name):
                logger.warning("Milvus has no collection for %s %s: run `manage.py vectorstore_rebuild`",
                               space, version)  # fmt: skip
                return None
            if self._outdated(name, space, version):
                return name
            self.client.load_collection(name)
            self._loaded.add(name)
        return name

    def _outdated(self, name: str, space: str, version: str) -> bool:
        """A collection made before a field was added (colours) is reloaded from Postgres with the new schema;
        True when that happened (the rebuild loads it)."""
        fields = {field["name"] for field in self.client.describe_collection(name).get("fields", [])}
        if "colours" in fields:
            return False
        row = SpaceVersion.objects.filter(space=space, version=version).first()
        if row is None:
            return False
        logger.warning("Milvus collection %s predates colour filters: reloading it from Postgres", name)
        self.rebuild(space=space, version=version, dimension=row.dimension, products=self._kind(name) == "products")
        return True

    def ensure_version(self, *, space: str, version: str, dimension: int, products: bool = False) -> None:
        name = collection_name(space, version)
        if not self.client.has_collection(name):
            self._create(name, dimension=dimension, products=products, with_index=True)
        SpaceVersion.objects.filter(space=space, version=version).update(index_name=name)

    # -- writes ----------------------------------------------------------------------------------
    def _upsert(self, name: str, batches: Iterator[list[dict[str, Any]]]) -> int:
        n = 0
        for batch in batches:
            self.client.upsert(name, batch)
            n += len(batch)
        return n

    def upsert_images(self, *, space: str, version: str, items: Sequence[tuple[int, np.ndarray]]) -> None:
        if not items:
            return
        images_write(space=space, version=version, items=items)
        name = self._ready(space, version)
        if name is None:  # the store was switched under a running version: start its collection now
            self.ensure_version(space=space, version=version, dimension=len(items[0][1]))
            name = collection_name(space, version)
        self._upsert(name, image_rows(space=space, version=version, image_ids=[pk for pk, _ in items]))

    def upsert_products(self, *, space: str, version: str, items: Sequence[tuple[int, np.ndarray, str]]) -> None:
        if not items:
            return
        products_write(space=space, version=version, items=items)
        name = self._ready(space, version)
        if name is None:
            self.ensure_version(space=space, version=version, dimension=len(items[0][1]), products=True)
            name = collection_name(space, version)
        self._upsert(name, product_rows(space=space, version=version, product_ids=[pk for pk, _, _ in items]))

    def products_sync(self, *, product_ids: Sequence[int]) -> None:
        ids = sorted({int(pk) for pk in product_ids})
        if not ids:
            return
        versions = SpaceVersion.objects.exclude(state=SpaceVersion.State.RETIRED).values_list("space", "version")
        for space, version in versions:
            name = collection_name(space, version)
            if self._ready(space, version) is None:
                continue
            if self._kind(name) == "products":
                batches = product_rows(space=space, version=version, product_ids=ids)
            else:
                batches = image_rows(space=space, version=version, product_ids=ids)
            kept: list[int] = []
            for batch in batches:
                self.client.upsert(name, batch)
                kept += [row["id"] for row in batch]
            # Whatever else Milvus holds for these products is gone from Postgres (deleted image or product).
            stale = f"product_id in {ids}" + (f" and id not in {kept}" if kept else "")
            self.client.delete(name, filter=stale)

    def rebuild(self, *, space: str, version: str, dimension: int, products: bool = False) -> int:
        """Drop and reload the collection from Postgres in batches, then build the index once, over all of it."""
        name = collection_name(space, version)
        if self.client.has_collection(name):
            self.client.drop_collection(name)
        self._loaded.discard(name)
        self._create(name, dimension=dimension, products=products, with_index=False)
        rows = product_rows if products else image_rows
        n = 0
        for batch in rows(space=space, version=version):
            self.client.insert(name, batch)
            n += len(batch)
        self.client.flush(name)
        self.client.create_index(name, self._index_params())
        self.client.load_collection(name)
        self._loaded.add(name)
        SpaceVersion.objects.filter(space=space, version=version).update(index_name=name)
        return n

    def drop_version(self, *, space: str, version: str) -> None:
        name = collection_name(space, version)
        if self.client.has_collection(name):
            self.client.drop_collection(name)
        self._loaded.discard(name)
        PgVectorStore().drop_version(space=space, version=version)

    # -- reads -------------------------------------------------------------------------------------
    def _search(self, name: str, vector: np.ndarray, k: int, expression: str) -> list[dict[str, Any]]:
        ef = max(int(settings.VITRINE_MILVUS_EF), int(k))  # HNSW wants ef >= k
        try:
            results = self.client.search(
                name, data=[np.asarray(vector, dtype=np.float32).tolist()], limit=int(k), filter=expression,
                output_fields=["product_id"], search_params={"metric_type": "COSINE", "params": {"ef": ef}},
            )  # fmt: skip
        except self.pymilvus.MilvusException:
            if self.client.has_collection(name):
                raise
            # Another process retired this version and dropped its collection: nothing is found here any more,
            # and search (search.querying.active) then reads the version now active.
            self._loaded.discard(name)
            return []
        return list(results[0]) if results else []

    def nearest_images(
        self, *, space: str, version: str, dimension: int, vector: np.ndarray | None = None, k: int,
        exclude_product_id: int | None = None, published_only: bool = True, filters: Filters | None = None,
        like_product_id: int | None = None,
    ) -> list[ImageHit]:  # fmt: skip
        if like_product_id is not None:
            vector = _product_vector(space=space, version=version, product_id=like_product_id)
        assert vector is not None
        name = self._ready(space, version)
        if name is None:
            return []
        expression = filter_expression(filters=filters, published_only=published_only,
                                       exclude_product_id=exclude_product_id)  # fmt: skip
        found = self._search(name, vector, k, expression)
        hits = [ImageHit(image_id=int(h["id"]), product_id=int(h["entity"]["product_id"]),
                         distance=1.0 - float(h["distance"])) for h in found]  # fmt: skip
        return sorted(hits, key=lambda h: (h.distance, h.image_id))

    def nearest_products(
        self, *, space: str, version: str, dimension: int, vector: np.ndarray, k: int, filters: Filters | None = None,
    ) -> list[tuple[int, float]]:  # fmt: skip
        name = self._ready(space, version)
        if name is None:
            return []
        hits = self._search(name, vector, k, filter_expression(filters=filters))
        return sorted(((int(h["id"]), 1.0 - float(h["distance"])) for h in hits), key=lambda h: (h[1], h[0]))

    def similar_candidates(
        self, *, product_id: int, image: VersionRef, text: VersionRef | None, pool: int,
        filters: Filters | None = None, published_only: bool = True,
    ) -> CandidatePool:  # fmt: skip
        """Both searches in Milvus; the exact scores of their union from Postgres, which holds every vector."""
        expression = filter_expression(filters=filters, published_only=published_only, exclude_product_id=product_id)
        ids: list[int] = []
        image_rows = text_rows = 0
        image_vector = ImageEmbedding.objects.product_vector(product_id=product_id, space=image.space,
                                                             version=image.version)  # fmt: skip
        name = self._ready(image.space, image.version) if image_vector is not None else None
        if name is not None and image_vector is not None:
            found = self._search(name, image_vector, pool, expression)
            image_rows = len(found)
            ids += [int(h["entity"]["product_id"]) for h in found]
        if text is not None:
            rows = ProductEmbedding.objects.filter(product_id=product_id, space=text.space,
                                                   model_version=text.version, status=EmbeddingStatus.OK)  # fmt: skip
            own = rows.values_list("vector", flat=True).first()
            name = self._ready(text.space, text.version) if own is not None else None
            if name is not None and own is not None:
                found = self._search(name, np.asarray(own, dtype=np.float32), pool, expression)
                text_rows = len(found)
                ids += [int(h["id"]) for h in found]
        return candidate_pool(product_id=product_id, image=image, text=text, pool=pool,
                              found=(ids, image_rows, text_rows))  # fmt: skip


def _product_vector(*, space: str, version: str, product_id: int) -> np.ndarray:
    """The vector that stands for a product (primary image first), from Postgres, the source of truth."""
    vector = ImageEmbedding.objects.product_vector(product_id=product_id, space=space, version=version)
    if vector is None:
        raise LookupError(f"product {product_id} has no vector in the {space} space yet")
    return vector
