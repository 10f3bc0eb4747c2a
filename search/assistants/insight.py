"""Search insight: what shoppers searched for, what they found, and what they clicked.

The search views and the JSON API hand :func:`record_after` their outcome. Once the response has gone to the
shopper (its ``close()``, which every WSGI/ASGI server calls after sending it) the row is handed to this process's
buffer (``insight_buffer``), which a background thread writes in batches: a search costs the shopper no database
write, and the worker that answered it none either. Result links go through the click view (a redirect that records
the click; the API's results carry it as ``click_url``), with a random token naming the search: no cookie, no
third-party script. ``session`` is an HMAC of the day, the session key (or address and browser) under the site's
secret: it links one visitor's searches within a day, and nothing across days or back to a person. Staff turn
recording off on the dashboard; the sweep deletes rows older than ``VITRINE_INSIGHT_RETENTION_DAYS``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from catalog.models import Product
from search.assistants.insight_buffer import buffer
from search.embedders import SpaceUnavailable
from search.indexing.versions import space_load
from search.models import InsightSwitch, SearchEvent
from search.querying import similar, text
from search.vectorstores import get_store

logger = logging.getLogger(__name__)

SWITCH_CACHE_S = 10.0
_switch: tuple[float, bool] | None = None


def recording() -> bool:
    """Whether staff want searches recorded (read at most every ``SWITCH_CACHE_S`` per process)."""
    global _switch
    now = time.monotonic()
    if _switch is None or now - _switch[0] > SWITCH_CACHE_S:
        try:
            row = InsightSwitch.objects.filter(pk=1).values_list("recording", flat=True).first()
        except DatabaseError as exc:  # never a failed search for the sake of its statistics
            logger.warning("search insight is off for now: its switch cannot be read (%s)", exc)
            _switch = (now, False)
            return False
        _switch = (now, True if row is None else bool(row))
    return _switch[1]


def recording_set(*, on: bool, user: Any = None) -> None:
    global _switch
    InsightSwitch.objects.update_or_create(pk=1, defaults={"recording": on, "changed_by": user})
    _switch = None


def session_hash(request: HttpRequest, *, day: str | None = None) -> str:
    """Same visitor, same day: same hash; another day: unrelated. Nothing else is kept of the visitor."""
    day = day or timezone.now().date().isoformat()
    who = str(request.session.session_key or "") if hasattr(request, "session") else ""
    who = who or f"{request.META.get('REMOTE_ADDR', '')}|{request.META.get('HTTP_USER_AGENT', '')[:200]}"
    return hmac.new(str(settings.SECRET_KEY).encode(), f"{day}|{who}".encode(), hashlib.sha256).hexdigest()[:16]


def new_token() -> str | None:
    """A token for this search's result links, or None when staff turned recording off."""
    return secrets.token_hex(16) if recording() else None


def after_response(response: HttpResponse, work: Callable[[], object]) -> HttpResponse:
    """Run ``work`` when the server has sent the response (before Django's own end-of-request cleanup)."""
    close = response.close

    def closing() -> None:
        try:
            work()
        except Exception:
            logger.exception("recording a search failed (the shopper saw the results)")
        finally:
            close()

    response.close = closing  # type: ignore[method-assign]
    return response


def record_after(response: HttpResponse, *, request: HttpRequest, token: str | None, kind: str, query: str,
                 results: int, top_score: float | None, no_good_match: bool = False) -> HttpResponse:  # fmt: skip
    """Record the search once ``response`` is sent (nothing when recording is off: no token)."""
    if token is None:
        return response
    session = session_hash(request)
    created = timezone.now()

    def write() -> None:
        buffer.add_event(SearchEvent(token=token, kind=kind, query=query.strip().lower()[:200], results=results,
                                     top_score=top_score, no_good_match=no_good_match, session=session,
                                     created_at=created))  # fmt: skip

    return after_response(response, write)


def click_url(request: HttpRequest, *, token: str, product_id: int) -> str:
    """A result's link that records the click, then redirects to the product (for the JSON API's clients)."""
    return request.build_absolute_uri(reverse("search:click", args=[token, product_id]))


def text_top_score(outcome: text.SearchOutcome) -> float | None:
    """The best hit's best cosine among the vector sources (a fused RRF score is not comparable across queries)."""
    if not outcome.hits:
        return None
    cosines = [score for name, score in outcome.hits[0].sources.items() if name not in (text.TITLE, text.FULLTEXT)]
    return max(cosines) if cosines else None


def click_record(*, token: str, product_id: int) -> None:
    """The first click on a search's results is kept (later ones are the same visitor browsing on); written with
    the buffer's next batch, once its search is written."""
    buffer.add_click(token=token, product_id=product_id, at=timezone.now())


def purge(*, now: Any = None) -> int:
    """Delete what is older than the retention (the sweep calls this)."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.VITRINE_INSIGHT_RETENTION_DAYS)
    deleted, _ = SearchEvent.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def _weak() -> Q:
    return Q(results=0) | Q(no_good_match=True) | Q(top_score__lt=settings.VITRINE_INSIGHT_WEAK_SCORE)


def dashboard(*, days: int = 30, top: int = 20) -> dict[str, Any]:
    """Figures for the staff dashboard, over the last ``days``."""
    since = timezone.now() - timedelta(days=days)
    events = SearchEvent.objects.filter(created_at__gte=since)
    text = events.filter(kind=SearchEvent.Kind.TEXT).exclude(query="")
    per_query = text.values("query").annotate(n=Count("pk"), clicks=Count("clicked_product"),
                                              weak=Count("pk", filter=_weak()))  # fmt: skip
    top_queries = [{**row, "ctr": row["clicks"] / row["n"]} for row in per_query.order_by("-n", "query")[:top]]
    weak_queries = [{**row, "ctr": row["clicks"] / row["n"]}
                    for row in per_query.filter(weak__gt=0).order_by("-weak", "-n", "query")[:top]]  # fmt: skip
    daily = dict(events.annotate(day=TruncDate("created_at")).values("day").annotate(n=Count("pk"))
                 .values_list("day", "n"))  # fmt: skip
    weak_daily = dict(events.filter(_weak()).annotate(day=TruncDate("created_at")).values("day")
                      .annotate(n=Count("pk")).values_list("day", "n"))  # fmt: skip
    today = timezone.now().date()
    trend = [(today - timedelta(days=i), daily.get(today - timedelta(days=i), 0),
              weak_daily.get(today - timedelta(days=i), 0)) for i in range(days - 1, -1, -1)]  # fmt: skip
    totals = events.aggregate(n=Count("pk"), clicks=Count("clicked_product"), weak=Count("pk", filter=_weak()),
                              photos=Count("pk", filter=Q(kind="photo")))  # fmt: skip
    return {"days": days, "top_queries": top_queries, "weak_queries": weak_queries, "trend": trend, "totals": totals,
            "ctr": totals["clicks"] / totals["n"] if totals["n"] else None}  # fmt: skip


def nearest_products(*, query: str, k: int = 3) -> list[tuple[Product, float]]:
    """For a query with no or weak results: the products nearest to its words in the text space, whatever the
    search's gates said, so staff can see whether a synonym, a better title or a new product would answer it."""
    version = similar.hybrid_text_version()
    if version is None:
        return []
    try:
        vector = np.asarray(space_load(version.space).embed_texts([query])[0], dtype=np.float32)
    except SpaceUnavailable:
        return []
    found = get_store().nearest_products(space=version.space, version=version.version, dimension=version.dimension,
                                         vector=vector, k=k)  # fmt: skip
    products = Product.objects.in_bulk([pk for pk, _ in found])
    return [(products[pk], 1.0 - distance) for pk, distance in found if pk in products]


def trend_svg(trend: list[tuple[Any, int, int]]) -> SafeString:
    """Searches per day (bars) with the weak or empty ones darker, as SVG drawn here (no script, no style)."""
    width, height, left, bottom = 640, 160, 32, 20
    peak = max([n for _, n, _ in trend] + [1])
    step = (width - left) / max(len(trend), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="vitrine-trend" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}"><title>Searches per day, last {len(trend)} days'
             f'</title><text x="0" y="12" font-size="11">{peak}</text>'
             f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#999"/>',
             ]  # fmt: skip
    for i, (day, n, weak) in enumerate(trend):
        x = left + i * step
        for value, colour in ((n, "#3b6ea5"), (weak, "#b5475b")):
            bar = (height - bottom - 16) * value / peak
            parts.append(f'<rect x="{x + 1:.1f}" y="{height - bottom - bar:.1f}" width="{max(step - 2, 1):.1f}" '
                         f'height="{bar:.1f}" fill="{colour}" data-day="{day}" data-value="{value}"/>')  # fmt: skip
        if i % 7 == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - 4}" font-size="10">{escape(str(day)[5:])}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # numbers and escaped dates only
