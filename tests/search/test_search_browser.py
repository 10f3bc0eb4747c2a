"""What shoppers see, in real headless Chromium: similar products (by look and words), a text query, a photo
upload."""

from __future__ import annotations

import pytest

from search.indexing import bulk
from search.models import RankingWeights, SpaceVersion
from tests.factories import CategoryFactory, ProductFactory, add_image
from tests.imagefactory import image_bytes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def indexed_shop(use_spaces, settings):  # type: ignore[no-untyped-def]
    use_spaces("pixels", "text")
    settings.VITRINE_PRIMARY_IMAGE_SPACE = "pixels"
    settings.VITRINE_FALLBACK_IMAGE_SPACE = "pixels"
    mugs, shirts = CategoryFactory(name="Mugs", slug="mugs"), CategoryFactory(name="Shirts", slug="shirts")
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


def test_a_photo_upload_shows_results(page, indexed_shop, screenshot, tmp_path):
    photo = tmp_path / "my-shirt.png"
    photo.write_bytes(image_bytes(size=(300, 300), color=(35, 60, 200)))
    page.goto("/search/photo/")
    page.set_input_files("input[type=file]", str(photo))  # the page submits as soon as a photo is chosen
    page.wait_for_selector("[data-results]")
    first = page.locator("[data-results] .card").first.inner_text()
    assert "Blue linen shirt" in first
    screenshot(page, "photo-results")
