"""The hybrid ranking's candidates in SQL: one statement that finds a product's nearest neighbours by look and by
words and scores each of them exactly in both spaces (a search that found a candidate brings its cosine; the other
is looked up).

Postgres holds every vector whichever store serves the searches, so the exact re-scoring is SQL for both stores:
the pgvector store also runs both nearest-neighbour searches in the same statement (one round trip; each search
walks its own partial HNSW index, the query vectors being looked up in the statement itself), the Milvus store
searches Milvus and hands the product ids over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from search.models import ImageEmbedding, ProductEmbedding
from search.vectorstores.base import Candidate, CandidatePool, Filters, VersionRef
from search.vectorstores.sql import filter_sql, product_vector_sql, run_vector_query, sql_literal, storage_type
from search.vectorstores.tuning import tuned_ef

IMAGES = ImageEmbedding._meta.db_table
TEXTS = ProductEmbedding._meta.db_table


def _vector(ref: VersionRef, column: str) -> str:
    """``column`` cast as the (space, version)'s partial index expects it."""
    return f"({column}::{storage_type(ref.dimension)}({ref.dimension}))"


def _rows_of(ref: VersionRef, alias: str) -> str:
    """The predicate of a (space, version)'s partial index, as literals so the planner can match it."""
    return (f"{alias}.space = {sql_literal(ref.space)} AND {alias}.model_version = {sql_literal(ref.version)} "
            f"AND {alias}.status = 'ok'")  # fmt: skip


def _query_vectors(image: VersionRef, text: VersionRef | None) -> list[str]:
    """CTEs ``qi(v)`` and ``qt(v)``: the query product's own vectors (primary image first), none when it has none."""
    own_image = product_vector_sql(space=image.space, version=image.version, product="%(product)s",
                                   dimension=image.dimension)  # fmt: skip
    ctes = [f"qi AS MATERIALIZED ({own_image})"]
    if text is not None:
        ctes.append(f"qt AS MATERIALIZED (SELECT {_vector(text, 'qe.vector')} AS v FROM {TEXTS} qe "
                    f"WHERE qe.product_id = %(product)s AND {_rows_of(text, 'qe')})")  # fmt: skip
    return ctes


def _searches(image: VersionRef, text: VersionRef | None, conditions: list[str], pool: int) -> list[str]:
    """CTEs ``ann_image(product_id, image_id, distance)``, one row per product (its nearest image found), and
    ``ann_text(product_id, distance)``: each space's ``pool`` nearest rows, the filters inside the index scan
    (``pool`` in the text: it shapes the plan)."""
    where = " AND ".join(conditions)
    joins = "JOIN catalog_product p ON p.id = {pk} LEFT JOIN catalog_category c ON c.id = p.category_id"
    image_distance = f"{_vector(image, 'e.vector')} <=> (SELECT v FROM qi)"
    ctes = [
        f"ann_images AS MATERIALIZED (SELECT i.product_id, e.image_id, {image_distance} AS distance FROM {IMAGES} e "
        f"JOIN catalog_productimage i ON i.id = e.image_id {joins.format(pk='i.product_id')} "
        f"WHERE {_rows_of(image, 'e')} AND {where.format(pk='i.product_id')} AND EXISTS (SELECT 1 FROM qi) "
        f"ORDER BY {image_distance} LIMIT {pool})",
        "ann_image AS (SELECT DISTINCT ON (product_id) product_id, image_id, distance FROM ann_images "
        "ORDER BY product_id, distance, image_id)",
    ]
    if text is None:
        return [*ctes, NO_TEXT_FOUND]
    text_distance = f"{_vector(text, 'e.vector')} <=> (SELECT v FROM qt)"
    ctes.append(
        f"ann_text AS MATERIALIZED (SELECT e.product_id, {text_distance} AS distance FROM {TEXTS} e "
        f"{joins.format(pk='e.product_id')} WHERE {_rows_of(text, 'e')} AND {where.format(pk='e.product_id')} "
        f"AND EXISTS (SELECT 1 FROM qt) ORDER BY {text_distance} LIMIT {pool})"
    )
    return ctes


# What another store's searches leave to this statement: nothing found here, every score looked up.
NO_IMAGE_FOUND = ("ann_images AS (SELECT NULL::bigint AS product_id WHERE false), ann_image AS (SELECT NULL::bigint "
                  "AS product_id, NULL::bigint AS image_id, NULL::float8 AS distance WHERE false)")  # fmt: skip
NO_TEXT_FOUND = "ann_text AS (SELECT NULL::bigint AS product_id, NULL::float8 AS distance WHERE false)"


def _scores(image: VersionRef, text: VersionRef | None) -> str:
    """Each candidate of ``cand(product_id)`` with its best image's cosine and its text vector's cosine.

    A search that found the candidate brings its distance; the other signal is looked up by product id, only for
    the candidates that search missed (``OFFSET 0`` keeps the planner from walking the HNSW index instead, which
    would visit the whole version for every candidate).
    """
    text_score = (f"1 - COALESCE(found_text.distance, {_vector(text, 'te.vector')} <=> (SELECT v FROM qt))"
                  if text else "NULL::float8")  # fmt: skip
    text_join = (f"LEFT JOIN LATERAL (SELECT te.vector FROM {TEXTS} te WHERE te.product_id = cand.product_id "
                 f"AND {_rows_of(text, 'te')} AND found_text.product_id IS NULL OFFSET 0) te ON true"
                 if text else "")  # fmt: skip
    return (
        "SELECT cand.product_id, p.category_id, COALESCE(found_image.image_id, best.image_id), "
        f"1 - COALESCE(found_image.distance, best.distance), {text_score} "
        "FROM cand JOIN catalog_product p ON p.id = cand.product_id "
        "LEFT JOIN ann_image found_image ON found_image.product_id = cand.product_id "
        "LEFT JOIN ann_text found_text ON found_text.product_id = cand.product_id "
        "LEFT JOIN LATERAL (SELECT image_id, distance FROM ("
        f"SELECT se.image_id, {_vector(image, 'se.vector')} <=> (SELECT v FROM qi) AS distance "
        f"FROM catalog_productimage si JOIN {IMAGES} se ON se.image_id = si.id AND {_rows_of(image, 'se')} "
        "WHERE si.product_id = cand.product_id AND found_image.product_id IS NULL AND EXISTS (SELECT 1 FROM qi) "
        f"OFFSET 0) own ORDER BY distance, image_id LIMIT 1) best ON true {text_join}"
    )


def candidate_pool(*, product_id: int, image: VersionRef, text: VersionRef | None, pool: int,
                   filters: Filters | None = None, published_only: bool = True,
                   found: tuple[Sequence[int], int, int] | None = None) -> CandidatePool:  # fmt: skip
    """The candidates of ``product_id``'s hybrid ranking, in one statement.

    Without ``found``, both nearest-neighbour searches run here, in pgvector. With ``found`` (candidate product
    ids, image rows, text rows), another store has searched and only the exact scores are computed.
    """
    params: dict[str, Any] = {"product": int(product_id)}
    ctes = _query_vectors(image, text)
    if found is None:
        conditions = ["{pk} <> %(product)s"] + (["p.is_active"] if published_only else [])
        more, values = filter_sql(filters)
        remaining = iter(values)
        for condition in more:  # filter_sql's positional %s as named parameters, in order
            pieces = condition.split("%s")
            named = pieces[0]
            for piece in pieces[1:]:
                name = f"f{len(params)}"
                params[name] = next(remaining)
                named += f"%({name})s" + piece
            conditions.append(named)
        ctes += _searches(image, text, conditions, int(pool))
        ctes.append("cand AS (SELECT product_id FROM ann_image UNION SELECT product_id FROM ann_text)")
        counts = "(SELECT count(*) FROM ann_images), (SELECT count(*) FROM ann_text)"
    else:
        ids, image_rows, text_rows = found
        params["ids"] = [int(pk) for pk in ids]
        ctes += [NO_IMAGE_FOUND, NO_TEXT_FOUND, "cand AS (SELECT DISTINCT unnest(%(ids)s::bigint[]) AS product_id)"]
        counts = f"{int(image_rows)}, {int(text_rows)}"
    has_text = "EXISTS (SELECT 1 FROM qt)" if text else "false"
    # One row even when nothing is found, so that the counts and the query's own vectors still come back.
    sql = (f"WITH {', '.join(ctes)} SELECT {counts}, EXISTS (SELECT 1 FROM qi), {has_text}, r.* "
           f"FROM (SELECT 1) one LEFT JOIN LATERAL ({_scores(image, text)}) r ON true")  # fmt: skip
    efs = [tuned_ef("pgvector", ref.space, ref.version) for ref in (image, text) if ref is not None]
    rows = run_vector_query(sql, params, pool, ef=max((ef for ef in efs if ef), default=None))
    image_rows, text_rows, query_image, query_text = rows[0][:4]
    if not query_image and not query_text:
        raise LookupError(f"product {product_id} has no vector in {image.space} {image.version}"
                          + (f" nor in {text.space} {text.version}" if text else ""))  # fmt: skip
    candidates = [Candidate(product_id=int(r[4]), category_id=r[5], image_id=r[6],
                            image_score=None if r[7] is None else float(r[7]),
                            text_score=None if r[8] is None else float(r[8]))
                  for r in rows if r[4] is not None]  # fmt: skip
    return CandidatePool(candidates=candidates, image_rows=int(image_rows), text_rows=int(text_rows),
                         query_image=bool(query_image), query_text=bool(query_text))  # fmt: skip
