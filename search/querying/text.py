"""Free-text search: CLIP text-to-image, the ``text`` space and Postgres full text, each calibrated, then fused.

Each source's scores mean something of their own (a CLIP cosine, a MiniLM or USE cosine, a ``ts_rank``), and
reciprocal rank fusion alone lets any weak hit in. So before fusion each source is judged by its calibration
(``settings.VITRINE_TEXT_CALIBRATION``, chosen from positive and negative queries: docs/relevance-text.md): a
source whose best hit is below its *gate* abstains, and hits below its *floor* are dropped. When every source
abstains, the answer is "no good match" rather than noise. Title matches count twice (once more as their own
source), so a word in a product's title weighs more than the same word in a description.

Colour words in the query ("rote Mütze", "red hat") are taken out of the text the sources see and become a
boost: products of that colour (their own field, or their pictures' dominant colour) that match the rest of
the query come first, then the other matches.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import Q

from catalog.models import Product
from search import embedders
from search.colours import query_colours
from search.embedders import runtime
from search.models import ImageColour, colour_condition
from search.querying import categories
from search.querying.similar import NotIndexed, similar_to_vector, space_version_or_why
from search.vectorstores import Filters, get_store

if TYPE_CHECKING:
    import numpy as np

    from search.embedders.base import Embedder
    from search.models import SpaceVersion

RRF_K = 60  # reciprocal rank fusion constant (Cormack et al.)
# The words of a product, as the GIN index of search's migration 0005 has them (keep the two identical).
PRODUCT_WORDS = "to_tsvector('english'::regconfig, title || ' ' || description)"
TITLE = "title"  # full-text matches in the title, fused as a source of their own
CATEGORY_SUFFIX = "-category"  # a text space's category-name source ("text-category")
FULLTEXT = "fulltext"
# Each source is asked for at least this many hits: fusion and the colour boost need candidates beyond the k
# shown (a red hat that "hat" alone ranks 30th).
POOL = 50


@dataclass
class SearchHit:
    product_id: int
    score: float  # fused (RRF) score for hybrid search, cosine similarity otherwise
    sources: dict[str, float]  # per-source score: cosine for vector spaces, ts_rank for full text


@dataclass
class SearchOutcome:
    hits: list[SearchHit]
    space: str  # "hybrid", or the one space that answered
    sources: list[str]
    notices: list[str]
    colours: list[str] = field(default_factory=list)  # colours the query named (matches first)
    # Every source's best hit was below its gate: nothing close enough to show. Shoppers are told so and
    # offered search by photo.
    no_good_match: bool = False


@dataclass(frozen=True)
class Calibration:
    gate: float  # without lexical evidence, a vector source answers only when its best hit reaches this
    floor: float  # hits below this are dropped
    weight: float = 1.0  # its share in the fusion
    # ... and when at least this share of its top 5 agree with the best hit on a category: a query for
    # something the shop sells lands in a cluster of such things, one for something else on scattered near-misses.
    agreement: float = 0.0


@dataclass
class Ranking:
    """One source's answer: hits best first, and its best score before the calibration judged it."""

    source: str
    hits: list[tuple[int, float]]
    best: float | None = None
    abstained: bool = False


def calibration_for(source: str, model: str = "") -> Calibration:
    """The calibration of a source for the model version that answers it: the entry whose name starts that
    version (``"use-multilingual-v3"``; the longest wins), else the entry named after the source (``"clip"``,
    ``"fulltext"``), else none (every hit kept)."""
    table = settings.VITRINE_TEXT_CALIBRATION
    matches = [key for key in table if model and model.startswith(key)]
    entry = table.get(max(matches, key=len)) if matches else table.get(source)
    if entry is None:
        return Calibration(gate=float("-inf"), floor=float("-inf"))
    unset = float("-inf")
    return Calibration(gate=float(entry.get("gate", unset)), floor=float(entry.get("floor", unset)),
                       weight=float(entry.get("weight", 1.0)),
                       agreement=float(entry.get("agreement", 0.0)))  # fmt: skip


def lexical_evidence(query: str) -> bool:
    """Does a word of the query (stemmed, English) occur in any published product's title, description or
    category name? The shop's own words are evidence that it sells the thing; a query none of whose words it
    uses must convince the models on its own (see :class:`Calibration`)."""
    from django.db import connection

    # Two EXISTS, so the products' side can use the expression index made by search's migration 0005.
    sql = (
        "SELECT EXISTS (SELECT 1 FROM catalog_product WHERE is_active AND "
        f"{PRODUCT_WORDS} @@ to_tsquery('english', %s)) OR EXISTS (SELECT 1 FROM catalog_category "
        "WHERE to_tsvector('english', name) @@ to_tsquery('english', %s))"
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT array_to_string(tsvector_to_array(to_tsvector('english', %s)), ' | ')", [query])
        lexemes = cursor.fetchone()[0]
        if not lexemes:
            return False
        cursor.execute(sql, [lexemes, lexemes])
        return bool(cursor.fetchone()[0])


def agreement(hits: list[tuple[int, float]]) -> float:
    """How many of the first hits share the best hit's category, out of as many as could: five, or fewer when
    that category has fewer products."""
    top = [pk for pk, _ in hits[:5]]
    categories = dict(Product.objects.filter(pk__in=top).values_list("pk", "category_id"))
    labels = [categories.get(pk) for pk in top]
    if not labels or labels[0] is None:
        return 0.0
    size = Product.objects.published().filter(category_id=labels[0]).count()
    possible = max(1, min(len(labels), size))
    return sum(label == labels[0] for label in labels[:possible]) / possible


def _fts(query: str, k: int, filters: Filters | None) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Full-text matches of title + description + category name (the weakest words), and those that match in
    the title alone (both by ts_rank)."""
    from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector

    title = SearchVector("title", weight="A", config="english")
    vector = (title + SearchVector("description", weight="B", config="english")
              + SearchVector("category__name", weight="C", config="english"))  # fmt: skip
    search = SearchQuery(query, search_type="websearch", config="english")
    products = Product.objects.published()
    if filters is not None:
        if filters.category_path:
            products = products.filter(Q(category__path=filters.category_path)
                                       | Q(category__path__startswith=filters.category_path + "/"))  # fmt: skip
        if filters.price_min is not None:
            products = products.filter(price__gte=filters.price_min)
        if filters.price_max is not None:
            products = products.filter(price__lte=filters.price_max)
        if filters.in_stock:
            products = products.filter(stock__gt=0)
        if filters.colour:
            products = products.filter(colour_condition(filters.colour))
    rows = (products.annotate(document=vector, rank=SearchRank(vector, search)).filter(document=search)
            .order_by("-rank", "id").values_list("id", "rank")[:k])  # fmt: skip
    titles = (products.annotate(title_document=title, rank=SearchRank(title, search)).filter(title_document=search)
              .order_by("-rank", "id").values_list("id", "rank")[:k])  # fmt: skip
    return [(pk, float(rank)) for pk, rank in rows], [(pk, float(rank)) for pk, rank in titles]


def _judge(ranking: Ranking, calibration: Calibration, *, evidence: bool = True) -> Ranking:
    """Keep the source's hits above its floor if it answers: with lexical ``evidence``, or when its best hit
    reaches its gate and its top hits agree on a category. Otherwise it abstains."""
    ranking.best = ranking.hits[0][1] if ranking.hits else None
    confident = ranking.best is not None and ranking.best >= calibration.gate and (
        calibration.agreement <= 0 or agreement(ranking.hits) >= calibration.agreement)  # fmt: skip
    if ranking.best is None or not (evidence or confident):
        ranking.abstained = ranking.best is not None
        ranking.hits = []
    else:
        ranking.hits = [(pk, score) for pk, score in ranking.hits if score >= calibration.floor]
    return ranking


def source_rankings(*, query: str, k: int, filters: Filters | None = None, space: str | None = None,
                    colour: str | None = None, evidence: bool | None = None,
                    notices: list[str] | None = None) -> dict[str, tuple[Ranking, Calibration]]:  # fmt: skip
    """Each source's calibrated ranking for ``query`` (``colour``: only products of that colour).

    ``space`` limits it to one vector space, and then raises what keeps that space from answering:
    :class:`SpaceUnavailable` (its model cannot be loaded) or :class:`NotIndexed` (no vectors yet). Without it, a
    source that cannot answer is left out and named, with the reason, in ``notices`` (for staff and the API).
    ``evidence``: :func:`lexical_evidence`, if known.
    """
    if evidence is None:
        evidence = lexical_evidence(query)
    if colour:
        filters = replace(filters or Filters(), colour=colour)
    out: dict[str, tuple[Ranking, Calibration]] = {}
    # CLIP (text to image) and every text space (several text models fuse like any other sources).
    wanted = [space] if space else [key for key in embedders.enabled()
                                    if key == "clip" or embedders.is_text_only(key)]  # fmt: skip
    for key in wanted:
        try:
            # The index first: a space no worker could index (its model missing) is skipped without
            # this process trying, and paying for, a model load of its own.
            version = space_version_or_why(key)
            embedder = embedders.load(key)
            if not _same_model(embedder.version, version.version):
                # The space's model was changed and its new version is still being built: this process can
                # only embed queries for the new one, and the index serves the old one.
                raise NotIndexed(f"its new model ({embedder.version}) is still being indexed")
            vector = embedder.embed_texts([query])[0]
        except embedders.SpaceUnavailable as exc:
            if space:
                raise
            if notices is not None:
                notices.append(f"{key}: model unavailable ({exc.reason}); left out of these results")
            continue
        except NotIndexed as exc:
            if space:
                raise
            if notices is not None:
                notices.append(f"{key}: not indexed yet ({exc}); left out of these results")
            continue
        if embedders.IMAGE in embedders.modalities(key):
            nearest = similar_to_vector(vector=vector, space=key, version=version, k=k, filters=filters)
            hits = [(h.product_id, h.score) for h in nearest]
        else:
            found = get_store().nearest_products(space=key, version=version.version, dimension=version.dimension,
                                                 vector=vector, k=k, filters=filters)  # fmt: skip
            hits = [(pk, 1.0 - distance) for pk, distance in found]
        calibration = calibration_for(key, version.version)
        out[key] = (_judge(Ranking(source=key, hits=hits), calibration, evidence=evidence), calibration)
        if space is None and embedders.is_text_only(key):
            out[key + CATEGORY_SUFFIX] = _category_source(key, embedder, version, vector, k, filters)
    if space is None:
        _hold_strays_to_the_gate(out)
        everything, titles = _fts(query, k, filters)
        for name, hits in ((FULLTEXT, everything), (TITLE, titles)):
            calibration = calibration_for(name)
            out[name] = (_judge(Ranking(source=name, hits=hits), calibration), calibration)
    return out


def _hold_strays_to_the_gate(out: dict[str, tuple[Ranking, Calibration]]) -> None:
    """When the words name a category the shop has ("hat" -> *Hats*), a text space's hit outside the named
    categories must reach the space's gate, not only its floor: "Red ball" at 0.32 is noise for "hat"."""
    named = {pk for name, (ranking, _) in out.items() if name.endswith(CATEGORY_SUFFIX) for pk, _ in ranking.hits}
    if not named:
        return
    for name, (ranking, calibration) in out.items():
        if not name.endswith(CATEGORY_SUFFIX) and embedders.is_text_only(name):
            ranking.hits = [(pk, score) for pk, score in ranking.hits if pk in named or score >= calibration.gate]


def _category_source(key: str, embedder: Embedder, version: SpaceVersion, vector: np.ndarray, k: int,
                     filters: Filters | None) -> tuple[Ranking, Calibration]:  # fmt: skip
    """The categories whose names the query reaches, as a source (see :mod:`search.querying.categories`)."""
    calibration = calibration_for(key + CATEGORY_SUFFIX, f"category:{version.version}")
    hits, best = categories.category_hits(embedder=embedder, space=key, version=version.version,
                                          dimension=version.dimension, vector=vector, k=k, gate=calibration.gate,
                                          filters=filters)  # fmt: skip
    abstained = best is not None and not hits  # the query reached no category's name
    return Ranking(source=key + CATEGORY_SUFFIX, hits=hits, best=best, abstained=abstained), calibration


def _same_model(loaded: str, active: str) -> bool:
    """Queries of ``loaded`` fit vectors of ``active``: the same model (an int8 image tower is the same model
    for text queries: only its image tower is quantized)."""
    suffix = runtime.INT8_SUFFIX
    return loaded.removesuffix(suffix) == active.removesuffix(suffix)


def _fuse(rankings: dict[str, tuple[Ranking, Calibration]]) -> list[SearchHit]:
    fused: dict[int, SearchHit] = {}
    for name, (ranking, calibration) in rankings.items():
        for rank, (pk, score) in enumerate(ranking.hits, start=1):
            hit = fused.setdefault(pk, SearchHit(product_id=pk, score=0.0, sources={}))
            hit.score += calibration.weight / (RRF_K + rank)
            hit.sources[name] = score
    return sorted(fused.values(), key=lambda h: (-h.score, h.product_id))


def _kinds(categories: list[int | None]) -> set[int | None]:
    """The kinds of thing the words' top hits are: the categories that two or more of them share, else the best
    hit's own. One stray hit (a red ball among four hats for "hat") does not make balls a kind asked for."""
    shared = {category for category in categories if categories.count(category) >= 2}
    return shared or set(categories[:1])


def _colour_first(coloured: list[SearchHit], hits: list[SearchHit], colour: str) -> list[SearchHit]:
    """Products of the colour that are the kind of thing asked for first, then the other things of that kind,
    then the other matches.

    "The kind of thing" is a category shared by the words' own top five (:func:`_kinds`): for "red hat", red
    hats come first and other hats next, while a red bus or a red ball (close enough matches for "hat" among
    red things) come after every hat. Among the colour's products, those whose own colour field says so come
    first, then those with no field (their pictures say so), then those whose field names another colour;
    fused order within each.
    """
    rows = Product.objects.filter(pk__in=[h.product_id for h in coloured + hits])
    facts = {pk: (category, (color or "").strip().lower()) for pk, category, color in
             rows.values_list("pk", "category_id", "color")}  # fmt: skip
    kinds = _kinds([facts[h.product_id][0] for h in hits[:5] if h.product_id in facts])

    def of_kind(hit: SearchHit) -> bool:
        return hit.product_id in facts and facts[hit.product_id][0] in kinds

    def tier(hit: SearchHit) -> int:
        own = facts[hit.product_id][1]
        return 0 if own == colour else (1 if not own else 2)

    first = sorted((h for h in coloured if of_kind(h)), key=tier)
    seen = {h.product_id for h in first}
    rest = [h for h in hits if h.product_id not in seen]
    return first + [h for h in rest if of_kind(h)] + [h for h in rest if not of_kind(h)]


def text_search(*, query: str, k: int = 48, filters: Filters | None = None, space: str | None = None) -> SearchOutcome:
    """Free-text search: CLIP text-to-image, the ``text`` space and Postgres full-text search, calibrated
    and fused by reciprocal rank, with colour words as a boost.

    ``space`` limits it to one vector space ("clip" or "text"). A source that cannot answer (model
    unavailable, no vectors yet) is left out and named in ``notices``.
    """
    notices: list[str] = []
    colours, rest = query_colours(query)
    evidence = lexical_evidence(rest)
    pool = max(k, POOL)
    rankings = source_rankings(query=rest, k=pool, filters=filters, space=space, evidence=evidence, notices=notices)
    answering = {name: pair for name, pair in rankings.items() if pair[0].hits}
    if not answering:
        gated = any(ranking.abstained for ranking, _ in rankings.values())
        return SearchOutcome(hits=[], space=space or "hybrid", sources=list(rankings), notices=notices,
                             colours=colours, no_good_match=gated)  # fmt: skip
    hits = _fuse(answering)
    colour = colours[0] if colours and not (filters and filters.colour) else None
    if colour:
        # The sources again, only over products of that colour, so a red hat ranked 40th for "hat" is found;
        # sources that abstained for the words abstain here too.
        coloured = source_rankings(query=rest, k=pool, filters=filters, space=space, colour=colour, evidence=True)
        hits = _colour_first(_fuse({n: pair for n, pair in coloured.items() if n in answering}), hits, colour)
    hits = hits[:k]
    if space is not None or len(rankings) == 1:
        name = space or next(iter(rankings))
        single = [SearchHit(product_id=h.product_id, score=h.sources.get(name, 0.0), sources=h.sources) for h in hits]
        return SearchOutcome(hits=single, space=name, sources=[name], notices=notices, colours=colours)
    return SearchOutcome(hits=hits, space="hybrid", sources=list(rankings), notices=notices, colours=colours)


def colour_facet(*, product_ids: list[int]) -> list[tuple[str, int]]:
    """How many of these products have each colour (own field or pictures), most common first."""
    counts: dict[str, int] = {}
    for names in ImageColour.objects.of_products(product_ids).values():
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
