"""Shopper search: similar products, text search (hybrid), photo search, compare page and the JSON API."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from PIL import Image

from catalog import services as catalog_services
from catalog.models import Product
from search.indexing import bulk
from search.models import ImageEmbedding
from search.querying import similar, text
from search.vectorstores import Filters
from tests.factories import CategoryFactory, ProductFactory, add_image, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(use_spaces, settings):
    """Two colour families, embedded in the pixel space (primary here) and the text space."""
    use_spaces("pixels", "text")
    settings.VITRINE_PRIMARY_IMAGE_SPACE = "pixels"
    settings.VITRINE_FALLBACK_IMAGE_SPACE = "pixels"
    reds, blues = CategoryFactory(name="Reds", slug="reds"), CategoryFactory(name="Blues", slug="blues")
    products = {}
    for i in range(6):
        red = ProductFactory(category=reds, title=f"Red enamel mug {i}", description="A sturdy mug for tea",
                             price=10 + i, stock=i % 2)  # fmt: skip
        add_image(red, color=(220 - 12 * i, 30 + 8 * i, 25), size=(64, 64))
        blue = ProductFactory(category=blues, title=f"Blue linen shirt {i}", description="Cool summer shirt",
                              price=30 + i, stock=1)  # fmt: skip
        add_image(blue, color=(25, 40 + 8 * i, 220 - 12 * i), size=(64, 64))
        products[f"red{i}"], products[f"blue{i}"] = red, blue
    bulk.images_embed_bulk(space="pixels")
    bulk.products_embed_bulk(space="text")
    return products


def test_product_page_shows_similar_products_without_machinery(client, shop):
    html = client.get(shop["red0"].get_absolute_url()).content.decode()
    similar_section = html.split("Looks similar")[1]
    assert similar_section.count('class="card"') == 8  # VITRINE_SIMILAR_K
    assert "Red enamel mug 1" in similar_section and "Red enamel mug 0</h3>" not in similar_section
    # Shoppers see no score and no model or space name.
    for machinery in ("similarity", "0.9", "pixels", "hybrid", "space", "card-why", "Why these results"):
        assert machinery not in similar_section, machinery


def test_staff_can_ask_why_a_similar_product_is_there(staff_client, shop):
    plain = staff_client.get(shop["red0"].get_absolute_url()).content.decode().split("Looks similar")[1]
    assert "card-why" not in plain and "Why these results? (staff)" in plain
    why = staff_client.get(shop["red0"].get_absolute_url(), {"why": "1"}).content.decode().split("Looks similar")[1]
    assert why.count('class="card-why staff-only"') == 8 and "similarity 0." in why and "by hybrid" in why


def test_same_category_toggle(client, shop):
    html = client.get(shop["red0"].get_absolute_url(), {"same_category": "1"}).content.decode()
    section = html.split("Looks similar")[1]
    assert section.count('class="card"') == 5 and "Blue linen" not in section


def test_product_page_queries_do_not_grow_with_k(client, shop, settings, django_assert_num_queries):
    client.get(shop["red1"].get_absolute_url())  # the process's cache of active versions, loaded once
    settings.VITRINE_SIMILAR_K = 2
    with CaptureQueriesContext(connection) as few:
        client.get(shop["red0"].get_absolute_url())
    settings.VITRINE_SIMILAR_K = 10
    with django_assert_num_queries(len(few.captured_queries)):
        response = client.get(shop["red0"].get_absolute_url())
    assert response.content.decode().split("Looks similar")[1].count('class="card"') == 10


def test_product_without_vectors_says_so(client, shop):
    fresh = ProductFactory(title="Brand new lamp")
    add_image(fresh)
    html = client.get(fresh.get_absolute_url()).content.decode()
    assert "still analysing this product" in html


def test_filtered_similar_search_still_returns_k_and_matches_exact(shop):
    blues = Filters(category_path="blues")
    hits = similar.similar_products(product=shop["red0"], k=5, space="pixels", filters=blues)
    assert len(hits) == 5 and all(h.product_id in {shop[f"blue{i}"].pk for i in range(6)} for h in hits)
    # Exact: brute-force cosine over the stored vectors.
    rows = ImageEmbedding.objects.filter(space="pixels", image__product__category__slug="blues").values_list(
        "image__product_id", "vector")  # fmt: skip
    query = np.asarray(ImageEmbedding.objects.get(space="pixels", image__product=shop["red0"]).vector)
    exact = sorted(rows, key=lambda r: -float(np.dot(query, r[1])))[:5]
    assert [h.product_id for h in hits] == [pk for pk, _ in exact]
    in_stock = similar.similar_products(product=shop["red0"], k=10, space="pixels",
                                          filters=Filters(in_stock=True, price_max=12))  # fmt: skip
    assert {h.product_id for h in in_stock} == {shop["red1"].pk}


def test_text_search_fuses_full_text_and_the_text_space(shop):
    outcome = text.text_search(query="tea mug", k=20)
    assert outcome.space == "hybrid" and set(outcome.sources) == {"text", "text-category", "fulltext", "title"}
    top = [h.product_id for h in outcome.hits[:6]]
    assert set(top) == {shop[f"red{i}"].pk for i in range(6)}
    assert all(set(h.sources) == {"text", "fulltext"} for h in outcome.hits[:6])
    filtered = text.text_search(query="tea mug", k=20, filters=Filters(category_path="blues"))
    assert all(h.product_id in {shop[f"blue{i}"].pk for i in range(6)} for h in filtered.hits)


def test_text_search_without_clip_says_why_and_still_answers(shop, use_spaces):
    use_spaces("pixels", "text", "clip", clip={"MODEL": "/nonexistent/clip"})
    outcome = text.text_search(query="linen shirt", k=5)
    # The model cannot be loaded, and the notice says that, not "no vectors yet".
    assert len(outcome.notices) == 1 and outcome.notices[0].startswith("clip: model unavailable (")
    assert "nonexistent" in outcome.notices[0] and "not indexed" not in outcome.notices[0]
    assert outcome.hits and outcome.hits[0].product_id in {shop[f"blue{i}"].pk for i in range(6)}


def test_a_space_not_indexed_yet_is_told_apart_from_a_model_that_cannot_load(shop, use_spaces, tiny_clip):
    use_spaces("pixels", "text", "clip", clip={"MODEL": str(tiny_clip)})
    outcome = text.text_search(query="linen shirt", k=5)
    assert len(outcome.notices) == 1 and outcome.notices[0].startswith("clip: not indexed yet (")
    with pytest.raises(similar.NotIndexed):
        text.text_search(query="linen shirt", k=5, space="clip")


def test_clip_text_search_and_a_separate_query_text_model(shop, use_spaces, tiny_clip):
    use_spaces("pixels", "text", "clip", clip={"MODEL": str(tiny_clip), "QUERY_TEXT_MODEL": str(tiny_clip)})
    bulk.images_embed_bulk(space="clip")
    outcome = text.text_search(query="a red mug", k=12)
    assert set(outcome.sources) == {"clip", "text", "text-category", "fulltext", "title"}
    from search import embedders

    assert embedders.get("clip")._query_model is not None  # queries went through the query text model


def test_search_page_renders_results_sorting_and_filters(client, shop):
    response = client.get(reverse("search:search"), {"q": "shirt", "sort": "-price", "in_stock": "on"})
    html = response.content.decode()
    assert response.status_code == 200 and "Results for “shirt”" in html
    titles = [p.title for p, _ in response.context["results"]]
    assert titles[0] == "Blue linen shirt 5"
    assert client.get(reverse("search:search")).status_code == 200  # empty form, no error
    bad = client.get(reverse("search:search"), {"q": "x", "price_min": "9", "price_max": "1"})
    assert bad.status_code == 400 and "minimum price is above" in bad.content.decode()


def _png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(out, format="PNG")
    return out.getvalue()


def test_photo_search_page_finds_lookalikes_and_keeps_nothing(client, shop, settings):
    before = sorted(p.name for p in settings.MEDIA_ROOT.rglob("*"))
    response = client.post(reverse("search:photo"), {"image": upload("mine.png", _png((200, 40, 30)))})
    assert response.status_code == 200
    titles = [p.title for p, _ in response.context["results"]]
    assert titles[0].startswith("Red enamel mug")
    assert sorted(p.name for p in settings.MEDIA_ROOT.rglob("*")) == before
    bad = client.post(reverse("search:photo"), {"image": upload("notes.png", b"not an image at all")})
    assert bad.status_code == 400 and "not an image file" in bad.content.decode()


def test_catalogue_images_find_their_own_product_first(client, shop):
    found = 0
    for product in [shop[f"red{i}"] for i in range(6)] + [shop[f"blue{i}"] for i in range(6)]:
        image = product.images.get()
        with image.file.open("rb") as fh:
            data = fh.read()
        response = client.post(reverse("search:api_search_image"), {"image": upload("q.png", data)})
        found += response.json()["results"][0]["product_id"] == product.pk
    assert found == 12


def test_compare_page_is_staff_only_and_shows_each_space(staff_client, shop):
    from django.test import Client

    url = reverse("search:compare")
    assert Client().get(url, {"product": shop["red0"].sku}).status_code == 302
    response = staff_client.get(url, {"product": shop["red0"].sku})
    html = response.content.decode()
    assert response.status_code == 200 and "<h3>pixels</h3>" in html and "<h3>hybrid</h3>" in html
    assert html.count("of 8 in the same category") == 2  # pixels, and hybrid (pixels with the text space)


# --- the JSON API ------------------------------------------------------------------------------


def test_api_similar(client, shop):
    response = client.get(f"/api/products/{shop['blue0'].pk}/similar", {"k": "3"})
    body = response.json()
    # Look and words together by default, once the text space has vectors; one space when asked.
    assert response.status_code == 200 and body["space"] == "hybrid" and len(body["results"]) == 3
    for space in ("pixels", "hybrid"):
        chosen = client.get(f"/api/products/{shop['blue0'].pk}/similar", {"k": "3", "space": space}).json()
        assert chosen["space"] == space and len(chosen["results"]) == 3
    first = body["results"][0]
    assert set(first) == {"product_id", "title", "url", "score", "image_url"}
    assert first["url"].startswith("http://testserver/products/") and first["image_url"].endswith(".jpg")
    assert [r["score"] for r in body["results"]] == sorted((r["score"] for r in body["results"]), reverse=True)
    same = client.get(f"/api/products/{shop['blue0'].pk}/similar", {"k": "10", "same_category": "1"}).json()
    assert len(same["results"]) == 5
    # An unpublished product is not there; one without a category has no category to narrow to.
    Product.objects.filter(pk=shop["blue0"].pk).update(is_active=False)
    gone = client.get(f"/api/products/{shop['blue0'].pk}/similar")
    assert gone.status_code == 404 and "no published product" in gone.json()["error"]
    Product.objects.filter(pk=shop["red0"].pk).update(category=None)
    loose = client.get(f"/api/products/{shop['red0'].pk}/similar", {"k": "10", "same_category": "1"}).json()
    assert len(loose["results"]) == 10 and shop["blue0"].pk not in [r["product_id"] for r in loose["results"]]


@pytest.mark.parametrize("params, message", [
    ({"k": "0"}, "k must be a whole number"), ({"k": "101"}, "k must be"), ({"k": "ten"}, "k must be"),
    ({"space": "nope"}, "space must be one of"), ({"space": "text"}, "space must be one of"),
    ({"price_min": "cheap"}, "price_min must be a number"),
    ({"in_stock": "maybe"}, "in_stock must be true or false"),
])  # fmt: skip
def test_api_errors_are_400_with_a_message(client, shop, params, message):
    response = client.get(f"/api/products/{shop['red0'].pk}/similar", params)
    assert response.status_code == 400 and message in response.json()["error"]


def test_api_not_found_and_not_indexed(client, shop):
    assert client.get("/api/products/999999/similar").status_code == 404
    assert client.get("/api/products/²/similar").status_code == 404
    assert (
        "unknown category"
        in client.get(f"/api/products/{shop['red0'].pk}/similar", {"category": "nope"}).json()["error"]
    )
    assert client.get("/api/nowhere").json()["error"].startswith("no such API endpoint")
    fresh = ProductFactory()
    add_image(fresh)
    response = client.get(f"/api/products/{fresh.pk}/similar")
    assert response.status_code == 409 and "no vector" in response.json()["error"]


def test_api_text_search(client, shop):
    response = client.get("/api/search", {"q": "linen shirt", "k": "4", "price_max": "32"})
    body = response.json()
    assert response.status_code == 200 and body["space"] == "hybrid" and len(body["results"]) == 3
    assert client.get("/api/search", {"q": "  "}).json()["error"].startswith("q (the search text) is required")
    assert client.get("/api/search", {"q": "x" * 201}).status_code == 400
    only_text = client.get("/api/search", {"q": "mug", "space": "text"}).json()
    assert only_text["space"] == "text"


def test_api_image_search_validation(client, shop):
    url = "/api/search/image"
    assert client.get(url).status_code == 405
    assert "multipart form field 'image'" in client.post(url).json()["error"]
    bad = client.post(url, {"image": upload("x.jpg", b"\xff\xd8\xff garbage", "image/jpeg")})
    assert bad.status_code == 400 and bad.json()["error"].startswith("image rejected:")
    ok = client.post(url + "?k=2", {"image": upload("x.png", _png((30, 50, 210)))})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 2 and ok.json()["space"] == "pixels"


def test_openapi_schema(client):
    schema = client.get("/api/schema").json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/products/{id}/similar", "/api/search", "/api/search/image"} <= set(schema["paths"])
    assert "Hit" in schema["components"]["schemas"]
    similar_space = next(p for p in schema["paths"]["/api/products/{id}/similar"]["get"]["parameters"]
                         if p["name"] == "space")  # fmt: skip
    assert "hybrid" in similar_space["schema"]["enum"] and "hybrid" in similar_space["description"]
    for path, method in (("/api/products/{id}/similar", "get"), ("/api/search", "get"),
                         ("/api/search/image", "post")):  # fmt: skip
        responses = schema["paths"][path][method]["responses"]
        assert responses["409"]["description"].startswith("Not indexed yet"), path
        assert responses["503"]["description"].startswith("Model unavailable"), path


def _unavailable_clip(use_spaces, settings) -> None:
    """CLIP enabled but its model cannot be had (offline, not cached): a worker has tried and recorded why."""
    from search.models import SpaceState

    use_spaces("pixels", "text", "clip", clip={"MODEL": "/nonexistent/clip"})
    SpaceState.objects.update_or_create(
        key="clip",
        defaults={
            "available": False,
            "checked_at": "2026-01-01T00:00Z",
            "reason": "clip weights are not on this machine",
        },
    )


def test_api_answers_503_for_a_model_that_cannot_load_and_409_for_not_indexed_yet(client, shop, use_spaces, settings,
                                                                                  tiny_clip):  # fmt: skip
    _unavailable_clip(use_spaces, settings)
    photo = {"image": upload("x.png", _png((30, 50, 210)))}
    for response in (client.get(f"/api/products/{shop['red0'].pk}/similar", {"space": "clip"}),
                     client.get("/api/search", {"q": "mug", "space": "clip"}),
                     client.post("/api/search/image?space=clip", photo)):  # fmt: skip
        assert response.status_code == 503, response.content
        assert "unavailable: clip weights are not on this machine" in response.json()["error"]
    # Without a space, hybrid search answers from the other sources and says what it left out, and why.
    body = client.get("/api/search", {"q": "mug"}).json()
    assert body["results"] and body["notices"] == [
        "clip: model unavailable (clip weights are not on this machine); left out of these results"
    ]
    # A model that loads but has no vectors yet is 409: try again later.
    use_spaces("pixels", "text", "clip", clip={"MODEL": str(tiny_clip)})
    from search.models import SpaceState

    SpaceState.objects.filter(key="clip").update(available=True, reason="")
    for response in (client.get(f"/api/products/{shop['red0'].pk}/similar", {"space": "clip"}),
                     client.get("/api/search", {"q": "mug", "space": "clip"})):  # fmt: skip
        assert response.status_code == 409 and response.json()["error"].startswith("not indexed yet"), response.content


def test_search_page_shows_shoppers_no_machinery_and_staff_why(staff_client, shop, use_spaces, settings):
    from django.test import Client

    _unavailable_clip(use_spaces, settings)
    html = Client().get(reverse("search:search"), {"q": "tea mug"}).content.decode()
    assert "Results for “tea mug”" in html and html.count('class="card"') == 6
    for machinery in ("clip", "CLIP", "unavailable", "match 0.", "Matched by", "fulltext", "card-why", "Staff:"):
        assert machinery not in html, machinery
    why = staff_client.get(reverse("search:search"), {"q": "tea mug", "why": "1"}).content.decode()
    assert "Staff: clip: model unavailable (clip weights are not on this machine)" in why
    assert why.count('class="card-why staff-only"') == 6 and "fused 0." in why and "fulltext" in why


def test_a_search_with_no_close_match_says_so_and_offers_photo_search(client, shop):
    """A query nothing in the shop fits gets no noise presented as its answers: the page says so."""
    weak = client.get(reverse("search:search"), {"q": "zebra"})
    html = weak.content.decode()
    assert weak.context["outcome"].no_good_match and not weak.context["outcome"].hits
    assert "No close match for “zebra”" in html and "Results for" not in html and 'class="card"' not in html
    assert 'href="/search/photo/"' in html.split("No close match")[1]
    strong = client.get(reverse("search:search"), {"q": "linen shirt"}).content.decode()
    assert "Results for “linen shirt”" in strong and "No close match" not in strong


def test_photo_search_shows_the_photo_back_and_offers_another_or_a_part(client, shop):
    response = client.post(reverse("search:photo"), {"image": upload("mine.png", _png((200, 40, 30)))})
    html = response.content.decode()
    assert response.status_code == 200 and "Your photo" in html
    preview = response.context["preview"]
    assert preview.startswith("data:image/jpeg;base64,") and f'src="{preview}"' in html
    shown = Image.open(io.BytesIO(__import__("base64").b64decode(preview.split(",", 1)[1])))
    assert shown.size == (64, 64) and shown.getpixel((32, 32))[0] > 150  # the red photo itself, not kept anywhere
    assert "choose another photo" in html and "Search this part" in html
    for machinery in ("pixels", "similarity", "space"):
        assert machinery not in html.split("Products that look like your photo")[1], machinery


def test_photo_search_says_why_it_cannot_answer_without_machinery_for_shoppers(staff_client, shop, use_spaces,
                                                                                settings):  # fmt: skip
    from django.test import Client

    _unavailable_clip(use_spaces, settings)
    settings.VITRINE_PRIMARY_IMAGE_SPACE = "clip"
    settings.VITRINE_FALLBACK_IMAGE_SPACE = "clip"
    response = Client().post(reverse("search:photo"), {"image": upload("mine.png", _png((200, 40, 30)))})
    html = response.content.decode()
    assert response.status_code == 503 and "Search by photo is not available right now" in html
    assert "clip" not in html.lower().replace("clip art", "")
    staff = staff_client.post(reverse("search:photo"), {"image": upload("mine.png", _png((200, 40, 30)))})
    assert "Staff: the clip model is unavailable: clip weights are not on this machine" in staff.content.decode()


def test_compare_page_opens_with_a_hint_and_tells_unavailable_from_not_indexed(staff_client, shop, use_spaces,
                                                                                settings):  # fmt: skip
    _unavailable_clip(use_spaces, settings)
    use_spaces("pixels", "text", "clip", "cnn", clip={"MODEL": "/nonexistent/clip"})
    url = reverse("search:compare")
    empty = staff_client.get(url).content.decode()
    assert "Pick a product by its id, SKU or part of its title" in empty
    assert empty.count("<img src=") >= 6 and "data-compare-candidates" in empty
    several = staff_client.get(url, {"product": "Red enamel"}).content.decode()
    assert several.count('<li><a href="?product=') == 6 and several.count("<img src=") >= 6
    html = staff_client.get(url, {"product": shop["red0"].sku}).content.decode()
    assert "<h3>pixels</h3>" in html and "Model unavailable: clip weights are not on this machine" in html
    assert "Not indexed yet:" in html.split("<h3>cnn</h3>")[1]


def test_product_text_is_reembedded_on_create(use_spaces, django_capture_on_commit_callbacks):
    use_spaces("pixels", "text")
    with django_capture_on_commit_callbacks() as callbacks:
        catalog_services.product_create(title="Kettle")
    assert len(callbacks) == 1  # the text-space embedding is queued after commit


def test_cards_come_in_order_with_their_images_in_one_query_and_imageless_products_too(shop, django_assert_num_queries):
    bare, hidden = ProductFactory(title="No picture yet"), ProductFactory(title="Hidden", is_active=False)
    add_image(hidden)
    ids = [shop["blue2"].pk, bare.pk, hidden.pk, shop["red1"].pk]
    with django_assert_num_queries(1):
        with_images = similar.products_in_order([shop["blue2"].pk, shop["red1"].pk])
        assert [p.primary_image.product_id for p in with_images] == [shop["blue2"].pk, shop["red1"].pk]
    cards = similar.products_in_order(ids)
    assert [p.pk for p in cards] == [shop["blue2"].pk, bare.pk, shop["red1"].pk]  # the hidden one left out
    assert cards[1].primary_image is None and cards[0].category.slug == "blues"


def test_json_result_cards_show_what_the_pages_cards_show_in_the_same_order_in_one_query():
    """The JSON API's rows (cards_in_order) against the model path the pages use (products_in_order): same
    published products, same order, same title, link and picture; a product without a primary picture has none."""
    with_picture, second, without, hidden = (ProductFactory() for _ in range(4))
    for product in (with_picture, second, hidden):
        add_image(product)
    add_image(second)  # two pictures: the primary one is shown
    hidden.is_active = False
    hidden.save()
    ids = [second.pk, hidden.pk, without.pk, with_picture.pk, 10**9]
    products = similar.products_in_order(ids)
    with CaptureQueriesContext(connection) as queries:
        cards = similar.cards_in_order(ids)
    assert len(queries) == 1  # the products with their primary pictures, the one without a picture included
    assert [c.product_id for c in cards] == [p.pk for p in products] == [second.pk, without.pk, with_picture.pk]
    for card, product in zip(cards, products, strict=True):
        image = product.primary_image
        assert (card.title, reverse("catalog:product_detail", kwargs={"slug": card.slug})) == (
            product.title, product.get_absolute_url())  # fmt: skip
        assert card.picture_url() == (image.thumbnail_url if image else None)
    assert cards[1].picture_url() is None and cards[0].picture_url().endswith(".jpg")
    with CaptureQueriesContext(connection) as queries:
        assert [c.product_id for c in similar.cards_in_order([with_picture.pk, second.pk])] == [with_picture.pk,
                                                                                                second.pk]  # fmt: skip
        assert similar.cards_in_order([]) == []
    assert len(queries) == 1  # and none for no results
