"""What shoppers and staff see, in real headless Chromium: similar products (by look and words), a text query, a
photo upload and a part of it, the header at desktop and phone widths, no machinery and no console errors; the
admin's space pages."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from search.indexing import bulk
from search.models import RankingWeights, SpaceState, SpaceVersion
from tests.factories import CategoryFactory, ProductFactory, add_image
from tests.imagefactory import image_bytes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The demo's ten categories: long names, more than a header line holds at 1280 px.
CATEGORIES = [
    "Bakery & Sweets",
    "Beverages",
    "Clothing & Accessories",
    "Computers & Electronics",
    "Fruit & Vegetables",
    "Model Vehicles",
    "Musical Instruments",
    "Office Supplies",
    "Sports & Outdoors",
    "Tools & Hardware",
]
# What a shopper must never read: a raw score, or the name of a model or embedding space.
# (Space keys are lowercase; "Model Vehicles" and the footer's "Open Clip Art" are the shop's own words.)
MACHINERY = re.compile(r"\b(similarity|match)\s+[0-9.]+|\b0\.[0-9]{3}\b|\b(pixels|cnn|clip|simclr|fulltext)\b|CLIP|"
                       r"\b(space|model|unavailable)\b")  # fmt: skip


# What the demo's spaces say offline: long, with unbroken URLs.
CLIP_OFFLINE = (
    "clip-ViT-B-32 is not in the local Hugging Face cache and the hub (https://huggingface.co) cannot be "
    "reached; download it once on a connected machine or set the model to a local path"
)
SIMCLR_OFFLINE = (
    "could not download the SimCLR checkpoint from https://pl-bolts-weights.s3.us-east-2.amazonaws.com/"
    "simclr/bolts_simclr_imagenet/simclr_imagenet.ckpt: <urlopen error [Errno -2] Name or service not "
    "known>"
)


@pytest.fixture
def indexed_shop(use_spaces, settings):  # type: ignore[no-untyped-def]
    use_spaces("pixels", "text", "clip", clip={"MODEL": "/nonexistent/clip"})
    settings.VITRINE_PRIMARY_IMAGE_SPACE = "pixels"
    settings.VITRINE_FALLBACK_IMAGE_SPACE = "pixels"
    # CLIP enabled but unavailable, as offline: the pages must not tell shoppers about it.
    SpaceState.objects.create(key="clip", available=False, checked_at=timezone.now(), reason=CLIP_OFFLINE)
    mugs, shirts = CategoryFactory(name="Mugs", slug="mugs"), CategoryFactory(name="Shirts", slug="shirts")
    for name in CATEGORIES:
        CategoryFactory(name=name, slug=re.sub(r"[^a-z]+", "-", name.lower()))
    products = []
    for i in range(5):
        mug = ProductFactory(category=mugs, title=f"Red enamel mug {i}", description="A sturdy mug for tea")
        add_image(mug, color=(220 - 15 * i, 30 + 10 * i, 30), size=(160, 160))
        shirt = ProductFactory(category=shirts, title=f"Blue linen shirt {i}", description="Cool summer shirt")
        add_image(shirt, color=(30, 40 + 10 * i, 220 - 15 * i), size=(160, 160))
        products += [mug, shirt]
    bulk.images_embed_bulk(space="pixels")
    bulk.products_embed_bulk(space="text")
    return products


def _console_errors(page) -> list[str]:  # type: ignore[no-untyped-def]
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("requestfailed", lambda request: errors.append(f"{request.url}: {request.failure}"))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return errors


def _visible_text(page) -> str:  # type: ignore[no-untyped-def]
    return page.locator("body").inner_text()


def _login(page, live_server, *, superuser: bool = True) -> None:  # type: ignore[no-untyped-def]
    user = get_user_model().objects.create_user("boss", password="pw-boss-123", is_staff=True,
                                                is_superuser=superuser)  # fmt: skip
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies["sessionid"].value,
                               "url": live_server.url}])  # fmt: skip


def test_shopper_pages_show_no_machinery_and_log_no_console_error(page, indexed_shop, screenshot, tmp_path):
    errors = _console_errors(page)
    mug = indexed_shop[0]
    photo = tmp_path / "my-shirt.png"
    photo.write_bytes(image_bytes(size=(300, 300), color=(35, 60, 200)))
    for name, url in [("home", "/"), ("listing", "/products/"), ("category", "/products/?category=mugs"),
                      ("product", mug.get_absolute_url()), ("search", "/search/?q=linen+shirt"),
                      ("search-nothing", "/search/?q=zebra"), ("photo", "/search/photo/")]:  # fmt: skip
        page.goto(url)
        page.wait_for_load_state("networkidle")
        text = _visible_text(page)
        assert not MACHINERY.search(text), (url, MACHINERY.search(text))
        screenshot(page, name)
    page.set_input_files("input[type=file]", str(photo))  # the page submits as soon as a photo is chosen
    page.wait_for_selector("[data-results]")
    page.wait_for_load_state("networkidle")
    assert not MACHINERY.search(_visible_text(page)), MACHINERY.search(_visible_text(page))
    screenshot(page, "photo-results")
    assert errors == []


def test_a_product_page_shows_similar_products(page, indexed_shop, screenshot):
    mug = indexed_shop[0]
    page.goto(mug.get_absolute_url())
    similar = page.locator("[data-similar] .card")
    assert similar.count() == 8
    assert "Red enamel mug" in similar.first.inner_text()
    assert similar.first.locator(".card-score").count() == 0  # no raw scores for shoppers
    page.get_by_label("Same category only").check()
    page.wait_for_url("**same_category=1")
    assert page.locator("[data-similar] .card").count() == 4
    screenshot(page, "similar")


@pytest.fixture
def misleading_colours(use_spaces, settings):  # type: ignore[no-untyped-def]
    """Mugs in blue, one red; shirts in the red of that mug: by look alone, the red mug's neighbours are shirts."""
    use_spaces("pixels", "text")
    settings.VITRINE_PRIMARY_IMAGE_SPACE = settings.VITRINE_FALLBACK_IMAGE_SPACE = "pixels"
    mugs, shirts = CategoryFactory(name="Mugs", slug="mugs"), CategoryFactory(name="Shirts", slug="shirts")
    red_mug = ProductFactory(category=mugs, title="Enamel mug", description="An enamel mug for tea")
    add_image(red_mug, color=(215, 35, 30), size=(160, 160))
    for i in range(4):
        mug = ProductFactory(category=mugs, title=f"Enamel mug no. {i + 2}", description="An enamel mug for tea")
        add_image(mug, color=(30, 40 + 12 * i, 210), size=(160, 160))
        shirt = ProductFactory(category=shirts, title=f"Linen shirt no. {i + 1}", description="A summer shirt")
        add_image(shirt, color=(210 - 6 * i, 40, 30 + 5 * i), size=(160, 160))
    bulk.images_embed_bulk(space="pixels")
    bulk.products_embed_bulk(space="text")
    # What `evaluate --tune hybrid` would record for a shop whose titles say more than its colours.
    image, text = (SpaceVersion.objects.get(space=s, state="active") for s in ("pixels", "text"))
    RankingWeights.objects.create(image_space="pixels", image_version=image.version, text_space="text",
                                  text_version=text.version, image_weight=0.1, text_weight=0.9, k=5, precision=0.9,
                                  best_single_space="text", best_single_precision=0.8, folds=2, queries=9)  # fmt: skip
    return red_mug


def test_looks_similar_ranks_by_look_and_words_without_showing_how(page, misleading_colours, client, screenshot):
    red_mug = misleading_colours
    by_look = client.get(f"/api/products/{red_mug.pk}/similar", {"space": "pixels", "k": "4"}).json()["results"]
    assert all(r["title"].startswith("Linen shirt") for r in by_look)  # the look alone would show shirts
    page.goto(red_mug.get_absolute_url())
    cards = page.locator("[data-similar] .card")
    assert cards.count() == 8
    titles = [cards.nth(i).locator(".card-title").inner_text() for i in range(8)]
    assert all(t.startswith("Enamel mug no.") for t in titles[:4]), titles  # words and look together: mugs first
    shown = page.locator("[data-similar]").inner_text()
    for hidden in ("similarity", "0.", "pixels", "hybrid", "space", "cosine", "score"):
        assert hidden not in shown.lower()
    assert page.locator("[data-similar] .card-score").count() == 0
    screenshot(page, "looks-similar-hybrid")


def test_a_text_query_shows_results(page, indexed_shop, screenshot):
    page.goto("/")
    page.get_by_role("searchbox", name="Search products").fill("linen shirt")
    page.keyboard.press("Enter")
    page.wait_for_url("**/search/?q=linen+shirt")
    results = page.locator("[data-results] .card")
    assert results.count() == 5
    assert all("Blue linen shirt" in results.nth(i).inner_text() for i in range(5))
    screenshot(page, "text-results")


def test_the_photo_is_shown_back_and_a_part_of_it_can_be_searched(page, indexed_shop, screenshot, tmp_path):
    """A photo with a blue shirt on the left and a red mug on the right: the whole photo, then only its right half."""
    from PIL import Image

    photo = Image.new("RGB", (400, 200), (35, 60, 200))
    photo.paste((210, 40, 30), (200, 0, 400, 200))
    path = tmp_path / "both.png"
    photo.save(path)
    page.goto("/search/photo/")
    assert page.locator("input[type=file]").is_hidden() or page.locator("input[type=file]").bounding_box()["width"] <= 1
    assert "No file chosen" not in _visible_text(page)
    page.set_input_files("input[type=file]", str(path))
    page.wait_for_selector("[data-results]")
    shown = page.locator("[data-your-photo-img]")
    assert shown.is_visible() and page.evaluate("document.querySelector('[data-your-photo-img]').naturalWidth") == 400
    assert page.get_by_text("choose another photo").is_visible()
    screenshot(page, "photo-shown-back")
    box = shown.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.1)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.95, box["y"] + box["height"] * 0.9, steps=8)
    page.mouse.up()
    assert page.locator("[data-crop-box]").is_visible()
    screenshot(page, "photo-part-chosen")
    with page.expect_navigation():
        page.get_by_role("button", name="Search this part").click()
    page.wait_for_selector("[data-results]")
    # What was searched is the red part alone: the photo shown back now is its crop, and mugs come first.
    width = page.evaluate("document.querySelector('[data-your-photo-img]').naturalWidth")
    assert 140 < width < 180
    assert "Red enamel mug" in page.locator("[data-results] .card").first.inner_text()
    screenshot(page, "photo-part-results")


@pytest.mark.parametrize("width, height", [(1280, 900), (390, 844)])
def test_the_header_reaches_every_category(page, indexed_shop, screenshot, width, height):
    page.set_viewport_size({"width": width, "height": height})
    page.goto("/")
    if width < 700:
        page.get_by_text("Categories", exact=True).first.click()  # the phone's menu
        nav = page.locator(".catmenu-list")
    else:
        nav = page.locator("nav[aria-label=Categories]:visible")
    links = nav.locator("a")
    names = ["All products", "Mugs", "Shirts", *CATEGORIES]
    assert sorted(links.all_inner_texts()) == sorted(names)
    # Nothing scrolls out of sight sideways, in the page or in the navigation itself…
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert nav.evaluate("el => el.scrollWidth <= el.clientWidth + 1")
    area = nav.bounding_box()
    assert area is not None
    for i in range(links.count()):
        link = links.nth(i)
        assert link.is_visible(), link.inner_text()
        box = link.bounding_box()
        # …every link lies inside the navigation's visible box and the screen, its whole name shown.
        assert box is not None and area["x"] <= box["x"] and box["x"] + box["width"] <= area["x"] + area["width"]
        assert box["x"] + box["width"] <= width, (link.inner_text(), box)
        assert link.evaluate("el => el.scrollWidth <= el.clientWidth + 1"), link.inner_text()
    screenshot(page, f"header-{width}")
    links.filter(has_text="Clothing & Accessories").first.click()
    page.wait_for_url("**/products/?category=clothing-accessories")


def test_the_admin_space_list_fits_1280_and_unavailable_spaces_cannot_be_reindexed(page, live_server, indexed_shop,
                                                                                    screenshot):  # fmt: skip
    _login(page, live_server)
    SpaceState.objects.create(
        key="simclr",
        available=False,
        checked_at=timezone.now(),
        reason=SIMCLR_OFFLINE,
        model_id="SimCLR (https://pl-bolts-weights.s3.us-east-2.amazonaws.com/simclr/x.ckpt)",
    )
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/admin/search/spacestate/")
    table = page.locator("#result_list")
    assert table.is_visible()
    for header in ("KEY", "STATUS", "RUNS ON", "PRESENT / MISSING / STALE / FAILED", "CHECKED"):
        cell = page.locator("#result_list th", has_text=header).first
        box = cell.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1280, header
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert page.evaluate("document.querySelector('#changelist-form .results').scrollWidth "
                         "<= document.querySelector('#changelist-form .results').clientWidth")  # fmt: skip
    screenshot(page, "admin-spaces")
    page.get_by_role("link", name="clip", exact=True).click()
    for name in ("Reindex all", "Missing only"):
        button = page.get_by_role("button", name=name)
        assert button.is_disabled() and "model is unavailable" in (button.get_attribute("title") or "")
    assert f"Reindexing is off: Its model is unavailable: {CLIP_OFFLINE}" in _visible_text(page)
    screenshot(page, "admin-clip-space")
    page.goto("/admin/search/spacestate/")
    page.get_by_role("link", name="pixels", exact=True).click()
    assert page.get_by_role("button", name="Reindex all").is_enabled()


def test_the_product_admin_image_table_fits_and_shows_each_space(page, live_server, indexed_shop, screenshot):
    _login(page, live_server)
    page.set_viewport_size({"width": 1280, "height": 900})
    mug = indexed_shop[0]
    add_image(mug, color=(10, 200, 10), size=(120, 90))
    page.goto(f"/admin/catalog/product/{mug.pk}/change/")
    screenshot(page, "admin-product-images")
    table = page.locator(".vitrine-images table").first
    box = table.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1280, box
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    states = page.locator(".vitrine-states").first.inner_text()
    assert "pixels: ok" in states and "clip: model unavailable" in states
