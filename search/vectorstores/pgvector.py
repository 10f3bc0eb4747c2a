"""pgvector: vectors in ``search_imageembedding``, one partial HNSW cosine index per (space, version).

The column has no fixed dimension; each index is built on an expression that
casts to the version's dimension, ``vector(d)`` up to 2,000 and ``halfvec(d)``
above (HNSW's limits), and its predicate names the space and version. Queries
repeat the same expression and predicate as SQL literals, so the planner can
match the partial index.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.utils import timezone
from pgvector import HalfVector, Vector

from config.memory import machine_memory_mb
from search.models import EmbeddingStatus, ImageEmbedding, ProductEmbedding, SpaceVersion
from search.vectorstores.base import CandidatePool, Filters, ImageHit, VectorStore, VersionRef
from search.vectorstores.candidates import candidate_pool
from search.vectorstores.sql import filter_sql, product_vector_sql, run_vector_query, sql_literal, storage_type
from search.vectorstores.tuning import tuned_ef

logger = logging.getLogger(__name__)
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64


def index_name(space: str, version: str) -> str:
    return f"search_img_{space[:12]}_{hashlib.sha256(version.encode()).hexdigest()[:10]}"


# --- writes (also used by stores that mirror Postgres, such as Milvus) ---------------------------------

COPY_THRESHOLD = 500  # below this, one INSERT … ON CONFLICT is as fast and simpler to follow in logs


def images_write(*, space: str, version: str, items: Sequence[tuple[int, np.ndarray]]) -> None:
    """Upsert image vectors into ``search_imageembedding`` (idempotent); big batches go through binary COPY."""
    if not items:
        return
    if len(items) >= COPY_THRESHOLD:
        images_copy(space=space, version=version, items=items)
        return
    now = timezone.now()
    rows = [
        ImageEmbedding(image_id=image_id, space=space, model_version=version, status=EmbeddingStatus.OK,
                       vector=np.asarray(vector, dtype=np.float32), attempts=0, error="", updated_at=now)
        for image_id, vector in items
    ]  # fmt: skip
    ImageEmbedding.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["image", "space", "model_version"],
        update_fields=["status", "vector", "attempts", "error", "updated_at"],
    )  # fmt: skip


def products_write(*, space: str, version: str, items: Sequence[tuple[int, np.ndarray, str]]) -> None:
    """Upsert text-space vectors ``(product_id, vector, source_hash)`` into ``search_productembedding``."""
    if not items:
        return
    now = timezone.now()
    rows = [
        ProductEmbedding(product_id=product_id, space=space, model_version=version, status=EmbeddingStatus.OK,
                         vector=np.asarray(vector, dtype=np.float32), source_hash=source_hash, attempts=0, error="",
                         updated_at=now)
        for product_id, vector, source_hash in items
    ]  # fmt: skip
    ProductEmbedding.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["product", "space", "model_version"],
        update_fields=["status", "vector", "source_hash", "attempts", "error", "updated_at"],
    )  # fmt: skip


def _copy_rows(cursor: Any, sql: str, types: list[str], rows: Iterable[tuple[Any, ...]]) -> int:
    """Stream rows through ``COPY … (FORMAT BINARY)``: vectors go as pgvector's binary format, no text parsing."""
    from pgvector.psycopg.vector import register_vector_info
    from psycopg.types import TypeInfo

    info = TypeInfo.fetch(cursor.connection, "vector")
    if info is None:
        raise RuntimeError("the vector extension is not installed in this database")
    register_vector_info(cursor, info)  # on this cursor only: Django's own loaders stay as they are
    n = 0
    with cursor.copy(sql) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def images_copy(*, space: str, version: str, items: Iterable[tuple[int, np.ndarray]], fresh: bool = False) -> int:
    """Bulk-load image vectors with binary COPY; returns the number of rows.

    ``fresh=True`` (a version with no rows yet, e.g. a synthetic seed) copies straight into
    the table; otherwise rows go to a temporary table first and are upserted from there in
    one statement, so a reindex can overwrite what is there.
    """
    sql_literal(space), sql_literal(version)  # validated like every identifier we store
    table = ImageEmbedding._meta.db_table
    vectors = ((int(pk), np.asarray(v, dtype=np.float32)) for pk, v in items)
    with transaction.atomic():
        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            if fresh:
                return _copy_rows(
                    cursor,
                    f"COPY {table} (image_id, space, model_version, status, vector, attempts, error, updated_at) "
                    "FROM STDIN (FORMAT BINARY)",
                    ["int8", "text", "text", "text", "vector", "int2", "text", "timestamptz"],
                    ((pk, space, version, "ok", v, 0, "", timezone.now()) for pk, v in vectors),
                )
            cursor.execute("CREATE TEMP TABLE IF NOT EXISTS vitrine_copy_stage (image_id bigint, vector vector) "
                           "ON COMMIT DELETE ROWS")  # fmt: skip
            n = _copy_rows(cursor, "COPY vitrine_copy_stage (image_id, vector) FROM STDIN (FORMAT BINARY)",
                           ["int8", "vector"], vectors)  # fmt: skip
            cursor.execute(
                f"INSERT INTO {table} (image_id, space, model_version, status, vector, attempts, error, updated_at) "
                "SELECT image_id, %s, %s, 'ok', vector, 0, '', now() FROM vitrine_copy_stage "
                "ON CONFLICT (image_id, space, model_version) DO UPDATE SET status = 'ok', "
                "vector = EXCLUDED.vector, attempts = 0, error = '', updated_at = EXCLUDED.updated_at",
                [space, version],
            )
            return n


def products_copy_fresh(*, space: str, version: str, items: Iterable[tuple[int, np.ndarray, str]]) -> int:
    """Bulk-load text-space vectors ``(product_id, vector, source_hash)`` of a version that has no rows yet
    (a synthetic seed) with binary COPY; returns the number of rows."""
    sql_literal(space), sql_literal(version)
    table = ProductEmbedding._meta.db_table
    with transaction.atomic():
        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            return _copy_rows(
                cursor,
                f"COPY {table} (product_id, space, model_version, status, vector, source_hash, attempts, error, "
                "updated_at) FROM STDIN (FORMAT BINARY)",
                ["int8", "text", "text", "text", "vector", "text", "int2", "text", "timestamptz"],
                ((int(pk), space, version, "ok", np.asarray(v, dtype=np.float32), source_hash, 0, "", timezone.now())
                 for pk, v, source_hash in items),
            )  # fmt: skip


def maintenance_memory_mb(*, rows: int, dimension: int, kind: str = "vector", m: int = HNSW_M) -> int:
    """``maintenance_work_mem`` for an HNSW build: the whole graph in memory (vectors + 2·m neighbour
    links per node on layer 0), with headroom; a graph that does not fit is built much more slowly
    (pgvector warns "hnsw graph no longer fits"). Capped at a quarter of this machine's memory."""
    per_vector = dimension * (2 if kind == "halfvec" else 4) + 2 * m * 8 + 64
    wanted = int(rows * per_vector * 1.3 / 2**20) + 64
    return max(64, min(wanted, machine_memory_mb() // 4))


def index_build(*, space: str, version: str, dimension: int, products: bool = False, kind: str | None = None,
                table: str | None = None, name: str | None = None) -> str:  # fmt: skip
    """Create the partial HNSW cosine index of a (space, version), sized for the rows already there.

    Outside a transaction it is built ``CONCURRENTLY`` (writes keep flowing) with
    ``maintenance_work_mem`` sized for the graph and parallel workers; bulk loads call it
    once after the COPY rather than growing the index row by row.
    """
    kind = kind or storage_type(dimension)
    if dimension > 4000:
        raise ValueError(f"{dimension}-d vectors exceed what HNSW can index (4,000 as halfvec)")
    name = name or index_name(space, version)
    table = table or (ProductEmbedding._meta.db_table if products else ImageEmbedding._meta.db_table)
    concurrently = "" if connection.in_atomic_block else "CONCURRENTLY "
    sql = (
        f"CREATE INDEX {concurrently}IF NOT EXISTS {connection.ops.quote_name(name)} ON {table} "
        f"USING hnsw ((vector::{kind}({dimension})) {kind}_cosine_ops) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) "
        f"WHERE space = {sql_literal(space)} AND model_version = {sql_literal(version)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE space = %s AND model_version = %s", [space, version])
        rows = int(cursor.fetchone()[0])
        memory = maintenance_memory_mb(rows=rows, dimension=dimension, kind=kind)
        workers = max(0, min(7, (os.cpu_count() or 2) - 1))
        if concurrently == "":
            # Inside a transaction: deferred FK checks would block CREATE INDEX ("pending trigger events").
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        # Session-level on purpose (CONCURRENTLY cannot run in a transaction, so SET LOCAL would not last),
        # reset right after.
        cursor.execute(f"SET maintenance_work_mem = '{memory}MB'")
        cursor.execute(f"SET max_parallel_maintenance_workers = {workers}")
        try:
            cursor.execute(sql)
        finally:
            cursor.execute("RESET maintenance_work_mem; RESET max_parallel_maintenance_workers")
    logger.info("HNSW index %s over %d rows (maintenance_work_mem %d MB, %d workers)", name, rows, memory, workers)
    return name


class PgVectorStore(VectorStore):
    table = ImageEmbedding._meta.db_table

    def storage_name(self, *, space: str, version: str) -> str:
        return index_name(space, version)

    def ensure_version(self, *, space: str, version: str, dimension: int, products: bool = False) -> None:
        name = index_build(space=space, version=version, dimension=dimension, products=products)
        SpaceVersion.objects.filter(space=space, version=version).update(index_name=name)

    def upsert_images(self, *, space: str, version: str, items: Sequence[tuple[int, np.ndarray]]) -> None:
        images_write(space=space, version=version, items=items)

    def upsert_products(self, *, space: str, version: str, items: Sequence[tuple[int, np.ndarray, str]]) -> None:
        products_write(space=space, version=version, items=items)

    def nearest_images(
        self, *, space: str, version: str, dimension: int, vector: np.ndarray | None = None, k: int,
        exclude_product_id: int | None = None, published_only: bool = True, filters: Filters | None = None,
        like_product_id: int | None = None,
    ) -> list[ImageHit]:  # fmt: skip
        kind = storage_type(dimension)
        expression = f"(e.vector::{kind}({dimension}))"
        cte = ""
        params: list[Any]
        if like_product_id is not None:
            # The query vector is the product's own (primary image first), looked up in the same
            # statement: one round trip, no vector sent back and forth. pgvector still uses the
            # HNSW index, the subquery becoming an init-plan parameter.
            own = product_vector_sql(space=space, version=version, product="%s", dimension=dimension)
            cte = f"WITH q AS MATERIALIZED ({own}) "
            query_sql, params = "(SELECT v FROM q)", [int(like_product_id)]
        else:
            assert vector is not None
            query_sql = f"%s::{kind}({dimension})"
            params = [(HalfVector(vector) if kind == "halfvec" else Vector(vector)).to_text()]
        conditions = [f"e.space = {sql_literal(space)}", f"e.model_version = {sql_literal(version)}", "e.status = 'ok'"]
        if published_only:
            conditions.append("p.is_active")
        if exclude_product_id is not None:
            conditions.append("i.product_id <> %s")
            params.append(int(exclude_product_id))
        more, more_params = filter_sql(filters)
        conditions += more
        params += more_params
        if like_product_id is None:
            params.append(params[0])
        sql = (
            f"{cte}SELECT e.image_id, i.product_id, {expression} <=> {query_sql} AS distance "
            f"FROM {self.table} e "
            "JOIN catalog_productimage i ON i.id = e.image_id "
            "JOIN catalog_product p ON p.id = i.product_id "
            "LEFT JOIN catalog_category c ON c.id = p.category_id "
            f"WHERE {' AND '.join(conditions)} "
            f"ORDER BY {expression} <=> {query_sql} LIMIT {int(k)}"  # in the text: it shapes the plan
        )
        rows = run_vector_query(sql, params, k, ef=tuned_ef("pgvector", space, version))
        if rows and rows[0][2] is None:  # the product has no vector in this version
            raise LookupError(f"product {like_product_id} has no vector in {space} {version}")
        hits = [ImageHit(image_id=r[0], product_id=r[1], distance=float(r[2])) for r in rows]
        return sorted(hits, key=lambda h: (h.distance, h.image_id))  # relaxed order: re-sort the few we got

    def nearest_products(
        self, *, space: str, version: str, dimension: int, vector: np.ndarray, k: int, filters: Filters | None = None,
    ) -> list[tuple[int, float]]:  # fmt: skip
        kind = storage_type(dimension)
        expression = f"(e.vector::{kind}({dimension}))"
        query = (HalfVector(vector) if kind == "halfvec" else Vector(vector)).to_text()
        conditions = [f"e.space = {sql_literal(space)}", f"e.model_version = {sql_literal(version)}", "e.status = 'ok'",
                      "p.is_active"]  # fmt: skip
        more, more_params = filter_sql(filters)
        sql = (
            f"SELECT e.product_id, {expression} <=> %s::{kind}({dimension}) AS distance "
            f"FROM {ProductEmbedding._meta.db_table} e "
            "JOIN catalog_product p ON p.id = e.product_id "
            "LEFT JOIN catalog_category c ON c.id = p.category_id "
            f"WHERE {' AND '.join(conditions + more)} "
            f"ORDER BY {expression} <=> %s::{kind}({dimension}) LIMIT {int(k)}"
        )
        rows = run_vector_query(sql, [query, *more_params, query], k, ef=tuned_ef("pgvector", space, version))
        return sorted(((int(r[0]), float(r[1])) for r in rows), key=lambda h: (h[1], h[0]))

    def similar_candidates(
        self, *, product_id: int, image: VersionRef, text: VersionRef | None, pool: int,
        filters: Filters | None = None, published_only: bool = True,
    ) -> CandidatePool:  # fmt: skip
        # Both searches and the exact scores in one statement: one round trip.
        return candidate_pool(product_id=product_id, image=image, text=text, pool=pool, filters=filters,
                              published_only=published_only)  # fmt: skip

    def rebuild(self, *, space: str, version: str, dimension: int, products: bool = False) -> int:
        """The rows are the store: make sure the index exists (``ensure_version`` did) and count them."""
        model = ProductEmbedding if products else ImageEmbedding
        return model.objects.filter(space=space, model_version=version, status=EmbeddingStatus.OK).count()

    def drop_version(self, *, space: str, version: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {connection.ops.quote_name(index_name(space, version))}")
        ImageEmbedding.objects.filter(space=space, model_version=version).delete()
        ProductEmbedding.objects.filter(space=space, model_version=version).delete()
