"""Milvus: a copy of the active vectors, with the product fields filters need, in one collection per (space, version).

Postgres stays the source of truth (every vector is written there first, by the
same code as the pgvector store); Milvus serves the searches. Why a collection per
version rather than partitions of one: a collection has one vector dimension, and
a model upgrade may change it; dropping a retired version is then one
``drop_collection``. Within a collection the top-level category is the
*partition key*, so a category filter searches only the partitions that can
match (on a cluster, fewer segments to visit).

Where Milvus runs: ``settings.VITRINE_MILVUS_URI`` when set, a Milvus server or cluster
(``http://milvus:19530``) or a milvus-lite file (a path: one process at a time, for tests and
one-process commands); unset, the embedded Milvus server of ``VITRINE_HOME``
(:mod:`config.embedded_milvus`), shared by the web server, the workers and commands.

A search that Milvus cannot answer (the server down or restarting) raises
:class:`search.vectorstores.base.StoreUnavailable`: a 503, never a 500. Writes go to
Postgres first and then raise, so the task retries and nothing is lost.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from django.conf import settings

from search.models import ImageEmbedding, SpaceVersion, product_query_vectors
from search.vectorstores.base import CandidatePool, Filters, ImageHit, StoreUnavailable, VectorStore, VersionRef
from search.vectorstores.candidates import candidate_pool
from search.vectorstores.milvus_rows import (
    MAX_COLOURS,
    Rows,
    _pymilvus,
    collection_name,
    filter_expression,
    image_rows,
    product_rows,
)
from search.vectorstores.parallel import both_at_once
from search.vectorstores.pgvector import PgVectorStore, images_write, products_write
from search.vectorstores.tuning import tuned_ef

logger = logging.getLogger(__name__)
NOT_LOADED = 101  # Milvus's error code for a collection not loaded (yet: a restarted server loads them again)
_T = TypeVar("_T")


class MilvusStore(VectorStore):
    mirrors_catalog = True
    tuning_key = "milvus"

    def __init__(self, uri: str | None = None) -> None:
        self.pymilvus = _pymilvus()
        self.configured_uri = uri or str(settings.VITRINE_MILVUS_URI or "")
        self.uri = self.configured_uri
        self._client: Any = None
        self._lock = threading.Lock()
        self._loaded: set[str] = set()
        self._kinds: dict[str, str] = {}
        self._written: dict[str, float] = {}
        self._local = threading.local()
        self._connected = False  # this process has reached the embedded server once

    # -- connection and collections -------------------------------------------------------------
    @property
    def is_embedded(self) -> bool:
        """No URI given: the embedded Milvus server of VITRINE_HOME."""
        return not self.configured_uri

    @property
    def is_lite(self) -> bool:
        return bool(self.configured_uri) and not re.match(r"^[a-z]+://", self.configured_uri)

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                token = str(settings.VITRINE_MILVUS_TOKEN or "")
                if self.is_embedded:
                    self.uri, token = self._embedded_uri()
                elif self.is_lite:
                    Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
                self._client = self.pymilvus.MilvusClient(uri=self.uri, token=token,
                                                          timeout=float(settings.VITRINE_MILVUS_TIMEOUT_S))  # fmt: skip
            return self._client

    def _embedded_uri(self) -> tuple[str, str]:
        """The embedded server's URI and token. The first connection of a process starts the server if needed and
        waits for it; so does every write (a worker's retry restarts a server that died), and the process holds the
        server until it exits. A read after the server died never waits for the restart: it starts one in the background
        and answers :class:`StoreUnavailable` (a 503) meanwhile."""
        from config import embedded_milvus

        server = embedded_milvus.milvus(Path(settings.VITRINE_HOME))
        if self._connected and getattr(self._local, "reading", False) and not server.is_running():
            threading.Thread(target=server.ensure_running, name="milvus-start", daemon=True).start()
            raise StoreUnavailable("the embedded Milvus server is starting")
        server.ensure_running()
        self._connected = True
        return server.uri, server.token

    def _writing(self, call: Callable[[], _T]) -> _T:
        """A write that fails drops the connection, so the task's retry connects afresh (and restarts the embedded
        server if it died). The vectors are in Postgres already: nothing is lost."""
        try:
            return call()
        except Exception:
            self.close(quiet=True)
            raise

    def _reading(self, what: str, call: Callable[[], _T], name: str | None = None) -> _T:
        """A read: a collection still loading (a restarted server) is loaded and asked again, and is
        :class:`StoreUnavailable` while it loads; so is a server that cannot answer (a 503), and the next call
        connects afresh (the embedded server is then started again in the background if it died)."""
        self._local.reading = True
        try:
            try:
                return call()
            except self.pymilvus.MilvusException as exc:
                if getattr(exc, "code", None) != NOT_LOADED and "not loaded" not in str(exc):
                    raise
                logger.info("Milvus: %s waits for its collection to load (%s)", what, exc)
                self._loaded.clear()
                try:
                    if name is not None:
                        self.client.load_collection(name, timeout=float(settings.VITRINE_MILVUS_TIMEOUT_S))
                    return call()
                except Exception as again:
                    raise StoreUnavailable("the Milvus collection is still loading") from again
        except StoreUnavailable:
            raise
        except Exception as exc:
            if isinstance(exc, self.pymilvus.MilvusException) and self._client is not None and self._answers():
                raise  # the server is up and refused this request: a bug to see, not an outage
            logger.warning("Milvus cannot answer (%s): %s", what, exc)
            self.close(quiet=True)
            raise StoreUnavailable(f"the Milvus vector store cannot answer: {type(exc).__name__}") from exc
        finally:
            self._local.reading = False

    def _answers(self) -> bool:
        try:
            self.client.list_collections(timeout=2)
            return True
        except Exception:
            return False

    def close(self, *, quiet: bool = False) -> None:
        """Let go of the connection (a milvus-lite file can be opened by one process at a time)."""
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:
                    if not quiet:
                        raise
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
        # NaN for no price (milvus_rows.NO_PRICE): the server has no nullable fields.
        schema.add_field("price", data_type.DOUBLE)
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
        """ "products" or "images", as written in the collection's description when it was made."""
        if name not in self._kinds:
            described = self.client.describe_collection(name)
            self._kinds[name] = "products" if described.get("description") == "products" else "images"
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

    def _ready_to_read(self, space: str, version: str) -> str | None:
        return self._reading("open", lambda: self._ready(space, version))

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
    def _upsert(self, name: str, batches: Iterator[list[dict[str, Any]]]) -> list[int]:
        """Delete then insert: the server's (2.3) upsert loses rows whose partition key changes. Two writers of the
        same row can then leave it twice for a moment; reads keep one hit per id."""
        kept: list[int] = []
        for batch in batches:
            ids = [int(row["id"]) for row in batch]
            self.client.delete(name, filter=f"id in {ids}")
            self.client.insert(name, batch)
            kept += ids
        self._wrote(name)
        return kept

    def _wrote(self, name: str) -> None:
        """Remember when this process last wrote ``name``: its searches then read at least that far (below)."""
        self._written[name] = time.time()

    def _consistency(self, name: str) -> dict[str, Any]:
        """Session consistency that holds for deletes too. pymilvus keeps the last write's timestamp per collection,
        but a delete answered by the server (2.3) with none resets it, and the deleted rows are still found. So a
        process that wrote asks for the server's state as of its last write, by the clock (the embedded server shares
        it; a remote one may be skewed by a few ms); one that did not reads what the server has."""
        if self.is_lite or str(settings.VITRINE_MILVUS_CONSISTENCY) != "Session" or name not in self._written:
            return {}
        from pymilvus.client.utils import mkts_from_unixtime

        return {"consistency_level": "Customized", "guarantee_timestamp": mkts_from_unixtime(self._written[name])}

    def _write(self, *, space: str, version: str, dimension: int, products: bool, rows: Rows) -> None:
        def write() -> None:
            name = self._ready(space, version)
            if name is None:  # the store was switched under a running version: start its collection now
                self.ensure_version(space=space, version=version, dimension=dimension, products=products)
                name = collection_name(space, version)
            self._upsert(name, rows)

        self._writing(write)

    def upsert_images(self, *, space: str, version: str, items: Sequence[tuple[int, np.ndarray]]) -> None:
        if not items:
            return
        images_write(space=space, version=version, items=items)
        self._write(space=space, version=version, dimension=len(items[0][1]), products=False,
                    rows=image_rows(space=space, version=version, image_ids=[pk for pk, _ in items]))  # fmt: skip

    def upsert_products(self, *, space: str, version: str, items: Sequence[tuple[int, np.ndarray, str]]) -> None:
        if not items:
            return
        products_write(space=space, version=version, items=items)
        rows = product_rows(space=space, version=version, product_ids=[pk for pk, _, _ in items])
        self._write(space=space, version=version, dimension=len(items[0][1]), products=True, rows=rows)

    def products_sync(self, *, product_ids: Sequence[int]) -> None:
        ids = sorted({int(pk) for pk in product_ids})
        if ids:
            self._writing(lambda: self._sync(ids))

    def _sync(self, ids: list[int]) -> None:
        versions = SpaceVersion.objects.exclude(state=SpaceVersion.State.RETIRED).values_list("space", "version")
        for space, version in versions:
            name = collection_name(space, version)
            if self._ready(space, version) is None:
                continue
            if self._kind(name) == "products":
                batches = product_rows(space=space, version=version, product_ids=ids)
            else:
                batches = image_rows(space=space, version=version, product_ids=ids)
            kept = self._upsert(name, batches)
            # Whatever else Milvus holds for these products is gone from Postgres (deleted image or product).
            # Found first, by a Strong query, then deleted by primary key: the server's delete by expression runs
            # its own query at a weaker consistency, which can miss rows written a moment ago.
            expression = f"product_id in {ids}" + (f" and id not in {kept}" if kept else "")
            stale = self.client.query(name, filter=expression, output_fields=["id"], consistency_level="Strong")
            if stale:
                self.client.delete(name, ids=[int(row["id"]) for row in stale])
            self._wrote(name)

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
        self._wrote(name)
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
    @staticmethod
    def _breadth(ref: tuple[str, str]) -> int:
        """The search breadth of a (space, version): the one ``tune_search`` measured, else the setting."""
        return tuned_ef("milvus", *ref) or int(settings.VITRINE_MILVUS_EF)

    def _search(
        self, name: str, vector: np.ndarray, k: int, expression: str, ref: tuple[str, str], ef: int | None = None
    ) -> list[dict[str, Any]]:
        """Milvus's ``k`` nearest rows; ``ef``: the breadth (by default :meth:`_breadth`, read here)."""
        ef = max(self._breadth(ref) if ef is None else ef, int(k))  # HNSW wants ef >= k
        data = [np.asarray(vector, dtype=np.float32).tolist()]

        def search() -> list[dict[str, Any]]:
            results = self.client.search(name, data=data, limit=int(k), filter=expression, output_fields=["product_id"],
                                         search_params={"metric_type": "COSINE", "params": {"ef": ef}},
                                         **self._consistency(name))  # fmt: skip
            return list(results[0]) if results else []

        try:
            found = self._reading("search", search, name)
        except self.pymilvus.MilvusException:
            if self.client.has_collection(name):
                raise
            # Another process retired this version and dropped its collection: nothing is found here any more,
            # and search (search.querying.active) then reads the version now active.
            self._loaded.discard(name)
            return []
        seen: set[int] = set()  # a row written twice at once by two writers (see _upsert) is one hit
        return [hit for hit in found if not (int(hit["id"]) in seen or seen.add(int(hit["id"])))]  # type: ignore[func-returns-value]

    def nearest_images(
        self, *, space: str, version: str, dimension: int, vector: np.ndarray | None = None, k: int,
        exclude_product_id: int | None = None, published_only: bool = True, filters: Filters | None = None,
        like_product_id: int | None = None,
    ) -> list[ImageHit]:  # fmt: skip
        if like_product_id is not None:
            vector = _product_vector(space=space, version=version, product_id=like_product_id)
        assert vector is not None
        name = self._ready_to_read(space, version)
        if name is None:
            return []
        expression = filter_expression(filters=filters, published_only=published_only,
                                       exclude_product_id=exclude_product_id)  # fmt: skip
        found = self._search(name, vector, k, expression, (space, version))
        hits = [ImageHit(image_id=int(h["id"]), product_id=int(h["entity"]["product_id"]),
                         distance=_distance(h)) for h in found]  # fmt: skip
        return sorted(hits, key=lambda h: (h.distance, h.image_id))

    def nearest_products(
        self, *, space: str, version: str, dimension: int, vector: np.ndarray, k: int, filters: Filters | None = None,
    ) -> list[tuple[int, float]]:  # fmt: skip
        name = self._ready_to_read(space, version)
        if name is None:
            return []
        hits = self._search(name, vector, k, filter_expression(filters=filters), (space, version))
        return sorted(((int(h["id"]), _distance(h)) for h in hits), key=lambda h: (h[1], h[0]))

    def similar_candidates(
        self, *, product_id: int, image: VersionRef, text: VersionRef | None, pool: int,
        filters: Filters | None = None, published_only: bool = True,
    ) -> CandidatePool:  # fmt: skip
        """Both searches in Milvus, at once; the exact scores of their union from Postgres, which holds every
        vector (the two query vectors read from it first, in one statement)."""
        expression = filter_expression(filters=filters, published_only=published_only, exclude_product_id=product_id)
        vectors = product_query_vectors(product_id=product_id, image=(image.space, image.version),
                                        text=(text.space, text.version) if text is not None else None)  # fmt: skip
        searches: list[Callable[[], list[dict[str, Any]]] | None] = []
        for ref, vector in zip((image, text), vectors, strict=True):
            if ref is None or vector is None or (name := self._ready_to_read(ref.space, ref.version)) is None:
                searches.append(None)
                continue
            # The breadth is read here, whole: the other thread is not to open a database connection of its own.
            version = (ref.space, ref.version)
            searches.append(partial(self._search, name, vector, pool, expression, version, self._breadth(version)))
        image_found, text_found = both_at_once(*searches)
        ids = [int(h["entity"]["product_id"]) for h in image_found] + [int(h["id"]) for h in text_found]
        return candidate_pool(product_id=product_id, image=image, text=text, pool=pool,
                              found=(ids, len(image_found), len(text_found)))  # fmt: skip


def _distance(hit: dict[str, Any]) -> float:
    """Cosine distance from Milvus's cosine similarity, clamped: for two vectors equal after normalisation (two
    plain-coloured pictures of one hue in the pixel space) its float32 arithmetic can return a hair above 1."""
    return 1.0 - min(1.0, max(-1.0, float(hit["distance"])))


def _product_vector(*, space: str, version: str, product_id: int) -> np.ndarray:
    """The vector that stands for a product (primary image first), from Postgres, the source of truth."""
    vector = ImageEmbedding.objects.product_vector(product_id=product_id, space=space, version=version)
    if vector is None:
        raise LookupError(f"product {product_id} has no vector in the {space} space yet")
    return vector
