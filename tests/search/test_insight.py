"""Search insight: searches recorded after the response, clicks through the result links, the staff dashboard,
the switch, and the retention the sweep enforces."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.core.signals import request_finished
from django.db import close_old_connections
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from catalog import services as catalog_services
from catalog.models import Product
from search import views
from search.assistants import insight
from search.indexing import embedding, sweep
from search.models import SearchEvent
from tests.factories import upload

DEMO = Path(__file__).resolve().parents[2] / "demo" / "images" / "fruit-vegetables"
LINK = re.compile(r'href="(/search/go/([0-9a-f]{32})/(\d+)/)"')


@pytest.fixture
def shop(use_spaces):  # type: ignore[no-untyped-def]
    use_spaces("cnn")
    insight._switch = None
    products = []
    for title, name in (("Enamel kettle", "apple.png"), ("Steel kettle", "banana.png"), ("Red apple", "apple.png")):
        product = catalog_services.product_create(title=title, description=f"A {title.lower()}.", price=10)
        if title != "Red apple":
            image = catalog_services.product_image_add(product=product, file=(DEMO / name).read_bytes())
            assert embedding.image_embed(image_id=image.pk, space="cnn") == "ok"
        products.append(product)
    return products


@pytest.mark.django_db
def test_a_search_is_recorded_after_the_response_and_its_click_counted(shop):
    client = Client()
    request = RequestFactory().get("/search/", {"q": "kettle"})
    request.user = AnonymousUser()
    request.session = SessionStore()
    response = views.search(request)
    assert response.status_code == 200 and not SearchEvent.objects.exists()  # nothing written before it is sent
    # What the server does once the shopper has the page (without Django closing the test's connection).
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)
    event = SearchEvent.objects.get()
    assert (event.kind, event.query, event.results) == ("text", "kettle", 2) and len(event.session) == 16

    html = client.get("/search/", {"q": "Kettle"}).content.decode()
    links = LINK.findall(html)
    assert len(links) == 2 and "Enamel kettle" in html
    url, token, product_id = links[0]
    clicked = client.get(url)
    assert clicked.status_code == 302 and clicked["Location"].startswith("/products/")
    client.get(url)  # a second click on the same search counts once
    event = SearchEvent.objects.get(token=token)
    assert event.clicked_product_id == int(product_id) and event.clicked_at is not None
    assert client.get(f"/search/go/{token}/999999/").status_code == 404
    assert client.get(f"/search/go/not-a-token/{shop[0].pk}/").status_code == 302  # still goes, records nothing


@pytest.mark.django_db
def test_api_searches_are_recorded_and_their_click_urls_count(shop, staff_client):
    """The JSON API records text and photo searches as the pages do; each result's click_url counts the click and
    goes to the product. Staff's own API searches are not recorded and carry no click_url."""
    client = Client()
    body = client.get("/api/search", {"q": "Kettle"}).json()
    assert len(body["results"]) == 2
    event = SearchEvent.objects.get()  # the test client closes the response: recorded after it was sent
    assert (event.kind, event.query, event.results, event.no_good_match) == ("text", "kettle", 2, False)
    first = body["results"][0]
    assert first["click_url"] == f"http://testserver/search/go/{event.token}/{first['product_id']}/"
    clicked = client.get(first["click_url"])
    assert (
        clicked.status_code == 302
        and clicked["Location"] == Product.objects.get(pk=first["product_id"]).get_absolute_url()
    )
    assert SearchEvent.objects.get(pk=event.pk).clicked_product_id == first["product_id"]

    with open(DEMO / "apple.png", "rb") as fh:
        photo = client.post("/api/search/image", {"image": upload("q.png", fh.read())}).json()
    assert photo["results"] and all("click_url" in r for r in photo["results"])
    assert SearchEvent.objects.filter(kind="photo", results=len(photo["results"])).count() == 1

    staff = staff_client.get("/api/search", {"q": "kettle"}).json()
    assert staff["results"] and not any("click_url" in r for r in staff["results"])
    assert SearchEvent.objects.count() == 2


@pytest.mark.django_db
def test_the_dashboard_shows_top_and_weak_queries_click_through_and_the_trend(shop, staff_client):
    client = Client()  # a shopper (staff_client is logged in)
    for query in ("kettle", "kettle", "zebra"):
        html = client.get("/search/", {"q": query}).content.decode()
    url = LINK.findall(client.get("/search/", {"q": "kettle"}).content.decode())[0][0]
    client.get(url)
    with open(DEMO / "apple.png", "rb") as fh:
        client.post(reverse("search:photo"), {"image": upload("q.png", fh.read())})
    assert "No close match" in html or "Nothing matches" in html
    assert SearchEvent.objects.filter(kind="photo").count() == 1
    page = staff_client.get(reverse("admin:search_searchevent_changelist")).content.decode()
    top = page.split("data-top-queries", 1)[1].split("</table>", 1)[0]
    assert re.search(r"<td>kettle</td><td>3</td><td>1</td><td>0\.33</td>", top), top
    weak = page.split("data-weak-queries", 1)[1].split("</table>", 1)[0]
    assert "<td>zebra</td>" in weak and "<td>kettle</td>" not in weak
    assert "5 searches (1 by photo)" in page
    assert page.count('data-value="5"') == 1  # today's bar: five searches; the SVG is drawn here, no script
    assert "<script" not in page.split('id="content-main"', 1)[1]
    # Staff's own searches are not demand.
    staff_client.get("/search/", {"q": "kettle"})
    assert SearchEvent.objects.count() == 5


@pytest.mark.django_db
def test_staff_can_switch_recording_off_and_result_links_go_direct(shop, staff_client):
    client = Client()
    staff_client.post(reverse("admin:search_searchevent_recording"), {"recording": "0"})
    html = client.get("/search/", {"q": "kettle"}).content.decode()
    assert not SearchEvent.objects.exists() and not LINK.findall(html) and shop[0].get_absolute_url() in html
    assert 'data-recording="off"' in staff_client.get(reverse("admin:search_searchevent_changelist")).content.decode()
    staff_client.post(reverse("admin:search_searchevent_recording"), {"recording": "1"})
    client.get("/search/", {"q": "kettle"})
    assert SearchEvent.objects.count() == 1


@pytest.mark.django_db
def test_the_sweep_deletes_searches_older_than_the_retention(settings, use_spaces):
    use_spaces("pixels")
    settings.VITRINE_INSIGHT_RETENTION_DAYS = 30
    now = timezone.now()
    for days, token in ((31, "a" * 32), (29, "b" * 32)):
        SearchEvent.objects.create(token=token, kind="text", query="old", results=0, session="x",
                                   created_at=now - timedelta(days=days))  # fmt: skip
    sweep.sweep()
    assert list(SearchEvent.objects.values_list("token", flat=True)) == ["b" * 32]
    assert insight.session_hash(RequestFactory().get("/"), day="2026-01-01") != insight.session_hash(
        RequestFactory().get("/"), day="2026-01-02")  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_search_never_fails_for_its_statistics(shop):
    from django.db import connection

    with connection.cursor() as cursor:  # the insight tables are gone (a migration not run yet, say)
        cursor.execute("ALTER TABLE search_insightswitch RENAME TO search_insightswitch_away")
    try:
        insight._switch = None
        response = Client().get("/search/", {"q": "kettle"})
        assert response.status_code == 200 and "Enamel kettle" in response.content.decode()
        assert not LINK.findall(response.content.decode())  # links go direct, nothing recorded
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE search_insightswitch_away RENAME TO search_insightswitch")
        insight._switch = None


@pytest.fixture
def batching(settings):  # type: ignore[no-untyped-def]
    """Recording as a web process does it: into the buffer, written by its thread (or its exit)."""
    from search.assistants.insight_buffer import buffer

    buffer.stop()
    yield buffer
    buffer.stop()  # the thread joined, its connection closed, nothing left for the next test


@pytest.mark.django_db(transaction=True)
def test_recorded_searches_and_clicks_are_written_in_batches_off_the_request(shop, settings, batching):
    """With a flush interval, a response's close() only buffers its search; the process's thread writes it (and the
    click on it) a moment later, in one batch, without anyone asking."""
    settings.VITRINE_INSIGHT_FLUSH_S = 30.0  # long: nothing can be written by the thread during the first part
    client = Client()
    html = client.get("/search/", {"q": "kettle"}).content.decode()
    url, token, product_id = LINK.findall(html)[0]
    assert client.get(url).status_code == 302
    assert batching.pending() == (1, 1) and not SearchEvent.objects.exists()  # nothing written by either request
    batching.stop()  # a worker's exit writes what it holds: the search, then the click on it
    event = SearchEvent.objects.get()
    assert (event.token, event.query, event.clicked_product_id) == (token, "kettle", int(product_id))

    settings.VITRINE_INSIGHT_FLUSH_S = 0.2
    html = client.get("/search/", {"q": "apple"}).content.decode()
    url, token, product_id = LINK.findall(html)[0]
    client.get(url)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not SearchEvent.objects.filter(token=token, clicked_product__isnull=False):
        time.sleep(0.05)
    event = SearchEvent.objects.get(token=token)  # written by the thread, nobody called flush
    assert (event.query, event.clicked_product_id) == ("apple", int(product_id)) and batching.pending() == (0, 0)


@pytest.mark.django_db(transaction=True)
def test_a_click_that_arrives_before_its_search_is_written_waits_for_it(shop, settings, batching):
    """Another worker answered the search and still holds it in its batch: the click is kept and applied once the
    search is written; a click on a token that names no search is dropped once its patience runs out."""
    from search.assistants import insight_buffer

    settings.VITRINE_INSIGHT_FLUSH_S = 30.0
    now = timezone.now()
    batching.add_click(token="c" * 32, product_id=shop[1].pk, at=now)
    batching.add_click(token="d" * 32, product_id=shop[0].pk, at=now)  # forged: no search will ever have it
    assert batching.flush() == 0 and batching.pending() == (0, 2)  # both wait: no such search yet
    batching.add_event(SearchEvent(token="c" * 32, kind="text", query="kettle", results=2, session="s" * 16,
                                   created_at=now))  # fmt: skip
    assert batching.flush() == 2 and batching.pending() == (0, 1)
    assert SearchEvent.objects.get(token="c" * 32).clicked_product_id == shop[1].pk
    batching._clicks = [insight_buffer.Click("d" * 32, shop[0].pk, now, time.monotonic() - 1)]  # patience spent
    assert batching.flush() == 1 and batching.pending() == (0, 0) and SearchEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_searches_buffered_while_the_database_refuses_are_dropped_with_a_warning_not_an_error(
        shop, settings, batching, caplog):  # fmt: skip
    from django.db import connection

    settings.VITRINE_INSIGHT_FLUSH_S = 30.0
    assert Client().get("/search/", {"q": "kettle"}).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE search_searchevent RENAME TO search_searchevent_away")
    try:
        batching.flush()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE search_searchevent_away RENAME TO search_searchevent")
    assert "a batch of 1 searches was not written" in caplog.text and batching.pending() == (0, 0)
    assert Client().get("/search/", {"q": "kettle"}).status_code == 200
    batching.flush()
    assert SearchEvent.objects.count() == 1  # the next batch is written as usual


@pytest.mark.django_db(transaction=True)
def test_concurrent_shoppers_searches_and_clicks_are_all_written_once(shop, settings, batching, live_server):
    """Twenty shoppers search and click at the same moment against a live threaded server: every response hands
    its row to the one buffer at once, the thread writes them in batches, and no search or click is lost or
    written twice."""
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    settings.VITRINE_INSIGHT_FLUSH_S = 0.2

    def shopper(i: int) -> str:
        query = ("kettle", "apple")[i % 2]
        with urllib.request.urlopen(f"{live_server.url}/search/?q={query}") as response:
            url, token, _ = LINK.findall(response.read().decode())[0]
        with urllib.request.urlopen(f"{live_server.url}{url}") as clicked:
            assert clicked.status == 200  # followed the redirect to the product
        return token

    with ThreadPoolExecutor(max_workers=20) as pool:
        tokens = list(pool.map(shopper, range(20)))
    assert len(set(tokens)) == 20
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and SearchEvent.objects.filter(clicked_product__isnull=False).count() < 20:
        time.sleep(0.1)
    rows = SearchEvent.objects.filter(token__in=tokens)
    assert rows.count() == 20 and SearchEvent.objects.count() == 20
    assert rows.filter(clicked_product__isnull=False).count() == 20 and batching.pending() == (0, 0)
