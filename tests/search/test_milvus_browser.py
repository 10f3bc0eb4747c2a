"""The shopper's pages in the Milvus mode, in real headless Chromium: the same shop as the pgvector browser tests,
its vectors written to the embedded Milvus server and every search (similar products, text, photo) read from it."""

from __future__ import annotations

import pytest
from PIL import Image

from search.vectorstores import get_store
from search.vectorstores.milvus import MilvusStore, collection_name
from tests.search.test_search_browser import MACHINERY, _console_errors, _visible_text, indexed_shop  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def milvus_mode(settings, milvus_server, milvus_prefix):  # type: ignore[no-untyped-def]
    settings.VITRINE_VECTOR_STORE = "search.vectorstores.milvus.MilvusStore"
    settings.VITRINE_MILVUS_URI = ""  # the embedded server of the tests' home
    get_store.cache_clear()
    yield
    store = get_store()
    if isinstance(store, MilvusStore):
        store.close(quiet=True)
    get_store.cache_clear()


def test_milvus_mode_product_text_and_photo_pages_read_milvus(page, milvus_mode, indexed_shop, screenshot, tmp_path):  # noqa: F811 - the fixture imported above
    store = get_store()
    assert isinstance(store, MilvusStore) and store.is_embedded
    # The bulk embedding wrote every vector to Milvus too.
    from search.models import SpaceVersion

    for space, rows in (("pixels", 10), ("text", 10)):
        version = SpaceVersion.objects.get(space=space, state="active").version
        counted = store.client.query(collection_name(space, version), filter="id >= 0", output_fields=["count(*)"],
                                     consistency_level="Strong")  # fmt: skip
        assert counted[0]["count(*)"] == rows
    errors = _console_errors(page)
    mug = indexed_shop[0]
    page.goto(mug.get_absolute_url())
    cards = page.locator("[data-similar] .card")
    assert cards.count() == 8 and "Red enamel mug" in cards.first.inner_text()
    page.get_by_label("Same category only").check()
    page.wait_for_url("**same_category=1")
    assert page.locator("[data-similar] .card").count() == 4  # the category filter, applied inside Milvus
    screenshot(page, "milvus-similar")
    page.goto("/search/?q=linen+shirt")
    results = page.locator("[data-results] .card")
    assert results.count() == 5 and all("Blue linen shirt" in results.nth(i).inner_text() for i in range(5))
    screenshot(page, "milvus-text-results")
    path = tmp_path / "red.png"
    Image.new("RGB", (300, 300), (215, 35, 30)).save(path)
    page.goto("/search/photo/")
    page.set_input_files("input[type=file]", str(path))
    page.wait_for_selector("[data-results]")
    assert "Red enamel mug" in page.locator("[data-results] .card").first.inner_text()
    assert not MACHINERY.search(_visible_text(page))
    screenshot(page, "milvus-photo-results")
    assert errors == []
