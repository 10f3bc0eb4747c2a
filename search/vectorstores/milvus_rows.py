"""Rows, names and filter expressions of the Milvus store: what goes into a collection, read from Postgres in chunks,
what the collection is called, and the shopper filters as a Milvus boolean expression."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from search.models import EmbeddingStatus, ImageColour, ImageEmbedding, ProductEmbedding
from search.vectorstores.base import Filters

INSERT_BATCH = 2000  # rows per insert: well under Milvus's 64 MB gRPC message limit at 4,000 dimensions
# A product without a price: NaN, since the Milvus server (2.3) has no nullable fields. Any comparison with NaN is
# false, so such a product fails every price bound, as NULL does in SQL.
NO_PRICE = math.nan


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
    """``prefix%`` for ``like``. Not escaped: the Milvus server (2.3) takes a backslash literally, so an escaped
    ``_`` would never match; ``_`` is no wildcard in Milvus's ``like`` anyway, and category paths are slugs."""
    return _string(prefix + "%")


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
            "path": path + "/" if path else "", "price": NO_PRICE if price is None else float(price),
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
