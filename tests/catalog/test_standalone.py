"""The catalogue on its own: pages render and writes succeed whether or not the search app is installed.

``tests/test_catalog_without_search.py`` runs every test of ``tests/catalog`` again with search left out of
``INSTALLED_APPS`` (and ``VITRINE_EXPECT_NO_SEARCH=1``, so this file can tell which run it is in).
"""

from __future__ import annotations

import os

import pytest
from django.apps import apps

from catalog import services
from tests.imagefactory import image_bytes

WITHOUT_SEARCH = os.environ.get("VITRINE_EXPECT_NO_SEARCH") == "1"


@pytest.mark.django_db
def test_the_catalogue_works_with_or_without_search(client):
    assert apps.is_installed("search") is not WITHOUT_SEARCH
    category = services.category_from_path(path="Kitchen/Mugs")
    product = services.product_create(title="Blue mug", category=category)
    services.product_image_add(product=product, file=image_bytes(color=(20, 40, 200)))
    services.products_update(product_ids=[product.pk], stock=0)
    for url in ("/", "/products/", product.get_absolute_url()):
        page = client.get(url)
        assert page.status_code == 200, url
        html = page.content.decode()
        assert ('action="/search/"' in html) is not WITHOUT_SEARCH, url
    detail = client.get(product.get_absolute_url()).content.decode()
    assert ("Looks similar" in detail) is not WITHOUT_SEARCH
    services.product_delete(product=product)
