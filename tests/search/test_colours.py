"""Colour as shoppers mean it: pictures' dominant colours, colour words in queries, the colour filter in both
vector stores, and the colour boost of text search."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from catalog import imaging
from catalog import services as catalog_services
from search.colours import image_colours, query_colours
from search.indexing import bulk, colouring
from search.models import ImageColour
from search.querying import text
from search.vectorstores import Filters
from tests.factories import CategoryFactory, ProductFactory

DEMO = Path(__file__).resolve().parents[2] / "demo"


def _clipart(fill: tuple[int, int, int], *, size: int = 120, transparent: bool = True) -> bytes:
    """A product drawing: a filled shape with a black outline on a transparent (or white) background."""
    image = Image.new("RGBA" if transparent else "RGB", (size, size), (0, 0, 0, 0) if transparent else "white")
    ImageDraw.Draw(image).ellipse((20, 25, size - 20, size - 15), fill=fill, outline=(0, 0, 0), width=3)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(("fill", "name"), [((200, 20, 30), "red"), ((30, 80, 200), "blue"),
                                            ((250, 250, 250), "white"), ((250, 200, 20), "yellow"),
                                            ((60, 150, 60), "green")])  # fmt: skip
def test_a_drawing_on_a_flattened_background_is_named_by_its_own_colour(fill, name):
    # The upload path flattens transparency onto white; that white is background, not product.
    picture = imaging.open_rgb(_clipart(fill), long_side=0, short_side=448)
    found = image_colours(picture)
    assert found[0][0] == name, found
    assert "white" not in [n for n, _ in found] or name == "white"


def test_real_demo_pictures_get_the_colours_the_catalogue_gives_them():
    rows = {row["image"]: row["color"] for row in csv.DictReader((DEMO / "manifest.csv").open(encoding="utf-8"))}
    for path, colour in [("images/fruit-vegetables/apple.png", "red"), ("images/fruit-vegetables/banana.png", "yellow"),
                         ("images/fruit-vegetables/green-pear.png", "green"),
                         ("images/bakery-sweets/wrapped-candy.png", "blue")]:  # fmt: skip
        assert rows[path] == colour
        picture = imaging.open_rgb((DEMO / path).read_bytes(), long_side=0, short_side=448)
        assert image_colours(picture)[0][0] == colour, path


def test_demo_pictures_agree_with_the_catalogue_colour_field_mostly():
    """The manifest's colour field was computed another way (HSV rules); the palette agrees on most pictures."""
    rows = [r for r in csv.DictReader((DEMO / "manifest.csv").open(encoding="utf-8")) if r["color"]][::4]
    agree = 0
    for row in rows:
        picture = imaging.open_rgb((DEMO / row["image"]).read_bytes(), long_side=0, short_side=448)
        agree += row["color"] in [n for n, _ in image_colours(picture)]
    assert agree / len(rows) >= 0.8


@pytest.mark.parametrize(("query", "colours", "rest"), [
    ("red hat", ["red"], "hat"), ("rote Mütze", ["red"], "Mütze"), ("chaussures noires", ["black"], "chaussures"),
    ("camiseta AZUL", ["blue"], "camiseta"), ("gray mug", ["grey"], "mug"), ("grüne Tasse", ["green"], "Tasse"),
    ("sac rouge et blanc", ["red", "white"], "sac et"), ("orange", ["orange"], "orange"), ("hat", [], "hat"),
])  # fmt: skip
def test_colour_words_in_four_languages(query, colours, rest):
    assert query_colours(query) == (colours, rest)


# --- stored colours and the filter, in both vector stores ----------------------------------------------


@pytest.fixture
def coloured_shop(db, use_spaces, vector_store):
    """Eight products: four red by their own field, two red only by their picture, two blue."""
    use_spaces("pixels", "text", "multilingual")
    hats = CategoryFactory(name="Hats", slug="hats")
    products = {}
    for i in range(8):
        field = "red" if i < 4 else ("" if i < 6 else "blue")
        fill = (200, 25, 30) if i < 6 else (30, 60, 210)
        product = ProductFactory(category=hats, title=f"Felt hat {i}", description="A warm felt hat", color=field)
        catalog_services.product_image_add(product=product, file=_clipart(fill, size=100 + i))
        products[i] = product
    bulk.images_embed_bulk(space="pixels")
    bulk.products_embed_bulk(space="text")
    bulk.products_embed_bulk(space="multilingual")
    return products


@pytest.mark.django_db
def test_the_worker_path_stores_each_pictures_colours_once(coloured_shop):
    rows = {row.image.product_id: row.names for row in ImageColour.objects.select_related("image")}
    assert len(rows) == 8
    assert rows[coloured_shop[0].pk][0] == "red" and rows[coloured_shop[7].pk][0] == "blue"
    assert colouring.images_without_colours(image_ids=ImageColour.objects.values_list("image_id", flat=True)) == set()


@pytest.mark.django_db
def test_colour_filter_is_part_of_the_vector_query_in_both_stores(coloured_shop, vector_store):
    from search.querying.similar import active_version

    red = {coloured_shop[i].pk for i in range(6)}
    version = active_version("pixels")
    query = np.ones(version.dimension, dtype=np.float32) / np.sqrt(version.dimension)
    hits = vector_store.nearest_images(space="pixels", version=version.version, dimension=version.dimension,
                                       vector=query, k=6, filters=Filters(colour="red"))  # fmt: skip
    assert {h.product_id for h in hits} == red  # k results, all red: filtered inside the search
    blue = vector_store.nearest_images(space="pixels", version=version.version, dimension=version.dimension,
                                       vector=query, k=6, filters=Filters(colour="blue"))  # fmt: skip
    assert {h.product_id for h in blue} == {coloured_shop[6].pk, coloured_shop[7].pk}
    text_version = active_version("text")
    found = vector_store.nearest_products(space="text", version=text_version.version,
                                          dimension=text_version.dimension, vector=query[:text_version.dimension]
                                          / np.linalg.norm(query[:text_version.dimension]), k=8,
                                          filters=Filters(colour="blue"))  # fmt: skip
    assert {pk for pk, _ in found} == {coloured_shop[6].pk, coloured_shop[7].pk}


@pytest.mark.django_db
def test_a_colour_found_later_reaches_the_store(coloured_shop, vector_store):
    """Colours computed after the vectors (reindex --colours on an older catalogue) are seen by the filter."""
    from search.querying.similar import active_version

    version = active_version("pixels")
    query = np.ones(version.dimension, dtype=np.float32) / np.sqrt(version.dimension)
    green = ProductFactory(title="Green hat", category=coloured_shop[0].category)
    image = catalog_services.product_image_add(product=green, file=_clipart((40, 160, 60)))
    bulk.images_embed_bulk(space="pixels", image_ids=[image.pk])
    ImageColour.objects.filter(image=image).delete()  # as if indexed before colours existed
    search = dict(space="pixels", version=version.version, dimension=version.dimension, vector=query, k=5,
                  filters=Filters(colour="green"))  # fmt: skip
    vector_store.products_sync(product_ids=[green.pk])
    assert vector_store.nearest_images(**search) == []
    assert colouring.images_colours_fill() == 1
    assert [h.product_id for h in vector_store.nearest_images(**search)] == [green.pk]


@pytest.mark.django_db
def test_colour_words_put_products_of_that_colour_first(coloured_shop):
    hats = coloured_shop
    for query in ("red hat", "roter Hut", "chapeau rouge"):
        outcome = text.text_search(query=query, k=8)
        order = [h.product_id for h in outcome.hits]
        assert outcome.colours == ["red"]
        # The hats whose own field says red, then those whose picture does, then the rest.
        assert set(order[:4]) == {hats[i].pk for i in range(4)}, query
        assert set(order[4:6]) == {hats[4].pk, hats[5].pk}, query
    blue = text.text_search(query="felt hat", k=8, filters=Filters(colour="blue"))
    assert {h.product_id for h in blue.hits} == {hats[6].pk, hats[7].pk}
