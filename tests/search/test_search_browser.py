"""What shoppers see, in real headless Chromium: similar products, a text query, a photo upload."""

from __future__ import annotations

import pytest

from search.indexing import bulk
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
    assert "similarity" in similar.first.locator(".card-score").inner_text()
    page.get_by_label("Same category only").check()
    page.wait_for_url("**same_category=1")
    assert page.locator("[data-similar] .card").count() == 4
    screenshot(page, "similar")


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
