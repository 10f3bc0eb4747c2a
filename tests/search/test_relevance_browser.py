"""What shoppers see, in real headless Chromium: the colour facet on search results and "no close match"."""

from __future__ import annotations

import pytest

from catalog import services as catalog_services
from search.indexing import bulk
from tests.factories import CategoryFactory, ProductFactory
from tests.search.test_colours import _clipart

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hat_shop(use_spaces):  # type: ignore[no-untyped-def]
    """Hats in three colours, drawn as clipart (their colours come from the pictures) and one by its field."""
    use_spaces("pixels", "text")
    hats, mugs = CategoryFactory(name="Hats", slug="hats"), CategoryFactory(name="Mugs", slug="mugs")
    fills = {"red": (200, 25, 30), "blue": (30, 60, 210), "green": (40, 160, 60)}
    for i, fill in enumerate([*fills.values(), *fills.values()]):
        product = ProductFactory(category=hats, title=f"Felt hat {i}", description="A warm felt hat")
        catalog_services.product_image_add(product=product, file=_clipart(fill, size=110 + i))
    mug = ProductFactory(category=mugs, title="Enamel mug", description="A sturdy mug for tea", color="red")
    catalog_services.product_image_add(product=mug, file=_clipart(fills["red"], size=140))
    bulk.images_embed_bulk(space="pixels")
    bulk.products_embed_bulk(space="text")


def test_the_colour_facet_narrows_search_results(page, hat_shop, screenshot):
    page.goto("/search/?q=felt+hat")
    facet = page.locator("[data-colour-facet]")
    assert facet.is_visible()
    assert page.locator("[data-results] .card").count() == 6
    red = facet.locator('[data-colour="red"]')
    assert "2" in red.inner_text()
    red.click()
    page.wait_for_url("**color=red**")
    cards = page.locator("[data-results] .card")
    assert cards.count() == 2 and all("Felt hat" in cards.nth(i).inner_text() for i in range(2))
    assert page.locator('[data-colour-facet] [data-colour="red"][aria-current="true"]').is_visible()
    screenshot(page, "colour-facet")
    page.locator('[data-colour-facet] [data-colour="red"]').click()  # lifts the filter again
    page.wait_for_function("!location.search.includes('color=')")
    assert page.locator("[data-results] .card").count() == 6


def test_a_query_for_something_not_sold_says_no_close_match(page, hat_shop, screenshot):
    page.goto("/search/?q=zebra")
    answer = page.locator("[data-no-match]")
    assert answer.is_visible() and "No close match for “zebra”" in answer.inner_text()
    assert page.locator(".card").count() == 0
    screenshot(page, "no-close-match")
    answer.get_by_role("link", name="search with a photo").click()
    page.wait_for_url("**/search/photo/")
