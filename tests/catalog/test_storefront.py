from decimal import Decimal

import pytest
from django.urls import reverse

from catalog import services
from tests.factories import CategoryFactory, ProductFactory, add_image

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    clothing = services.category_from_path(path="Clothing")
    shirts = services.category_from_path(path="Clothing/Shirts")
    kitchen = services.category_from_path(path="Kitchen")
    products = []
    for i in range(5):
        p = ProductFactory(title=f"Shirt {i}", category=shirts, price=Decimal(10 + i))
        add_image(p)
        products.append(p)
    cap = ProductFactory(title="Cap", category=clothing, stock=0)
    add_image(cap)
    pan = ProductFactory(title="Pan", category=kitchen, price=None)
    add_image(pan)
    ProductFactory(title="Hidden", category=kitchen, is_active=False)
    return {"clothing": clothing, "shirts": shirts, "kitchen": kitchen, "shirts_list": products, "cap": cap, "pan": pan}


def test_home_shows_categories_with_subtree_counts(client, shop, django_assert_max_num_queries):
    with django_assert_max_num_queries(5):
        response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Clothing" in html and "6 products" in html  # 5 shirts + the cap, shirts counted in the parent
    assert "Kitchen" in html and "1 product<" in html  # the hidden product is not counted


def test_list_filters_by_category_subtree(client, shop):
    response = client.get(reverse("catalog:product_list"), {"category": "clothing"})
    titles = [p.title for p in response.context["page"].object_list]
    assert sorted(titles) == ["Cap", "Shirt 0", "Shirt 1", "Shirt 2", "Shirt 3", "Shirt 4"]
    response = client.get(reverse("catalog:product_list"), {"category": "shirts"})
    assert response.context["page"].paginator.count == 5
    assert client.get(reverse("catalog:product_list"), {"category": "nope"}).status_code == 404


def test_list_sorts_and_filters_stock(client, shop):
    response = client.get(reverse("catalog:product_list"), {"category": "clothing", "sort": "-price", "in_stock": "1"})
    titles = [p.title for p in response.context["page"].object_list]
    assert titles == ["Shirt 4", "Shirt 3", "Shirt 2", "Shirt 1", "Shirt 0"]
    assert client.get(reverse("catalog:product_list"), {"sort": "'; drop table"}).status_code == 200


def test_list_has_a_colour_facet_from_the_products_colour_field(client, shop):
    from catalog.models import Product

    Product.objects.filter(title__in=["Shirt 0", "Shirt 1", "Cap"]).update(color="blue")
    Product.objects.filter(title="Shirt 2").update(color="Red")  # the field's case does not matter
    response = client.get(reverse("catalog:product_list"), {"category": "clothing"})
    facet = {link["colour"]: link["count"] for link in response.context["colour_facet"]}
    assert facet == {"blue": 3, "red": 1}
    blue = client.get(reverse("catalog:product_list"), {"category": "clothing", "color": "blue"})
    assert {p.title for p in blue.context["page"].object_list} == {"Shirt 0", "Shirt 1", "Cap"}
    html = blue.content.decode()
    assert 'data-colour="blue"' in html and 'aria-current="true"' in html
    unknown = client.get(reverse("catalog:product_list"), {"color": "<mauve>"})
    assert unknown.status_code == 200 and len(unknown.context["page"].object_list) == 7


def test_list_paginates(client, settings, shop):
    settings.VITRINE_PRODUCTS_PER_PAGE = 3
    first = client.get(reverse("catalog:product_list"))
    assert first.context["page"].paginator.num_pages == 3  # 7 published products
    html = first.content.decode()
    assert "Page 1 of 3" in html and "page=2" in html
    assert 'class="card-cat"' in html and 'class="card-score"' not in html  # listings show no scores
    last = client.get(reverse("catalog:product_list"), {"page": "99"})
    assert last.context["page"].number == 3
    assert client.get(reverse("catalog:product_list"), {"page": "x"}).status_code == 200


def test_list_query_count_does_not_grow_with_products(client, django_assert_num_queries):
    category = CategoryFactory()
    for _ in range(3):
        add_image(ProductFactory(category=category))
    with django_assert_num_queries(5) as small:  # count, products, primary images, nav, colour facet
        client.get(reverse("catalog:product_list"))
    for _ in range(12):
        add_image(ProductFactory(category=CategoryFactory()))
    with django_assert_num_queries(len(small.captured_queries)):
        response = client.get(reverse("catalog:product_list"))
    assert len(response.context["page"].object_list) == 15


def test_product_page_shows_gallery_price_and_stock(client, shop, django_assert_max_num_queries):
    shirt = shop["shirts_list"][2]
    add_image(shirt)
    add_image(shirt)
    # product + images + breadcrumbs + nav, and the similar-products block asking which space is live
    with django_assert_max_num_queries(7):
        response = client.get(shirt.get_absolute_url())
    html = response.content.decode()
    assert response.status_code == 200
    assert "€12.00" in html and "In stock" in html and "3 available" in html
    assert html.count('class="thumb') == 3
    for image in shirt.images.all():
        assert image.display_url in html or image.thumbnail_url in html
    assert "Clothing" in html and "Shirts" in html  # breadcrumbs


def test_product_page_media_is_served(client, shop):
    image = shop["cap"].primary_image
    response = client.get(image.thumbnail_url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content)[:2] == b"\xff\xd8"  # a JPEG


def test_out_of_stock_and_price_on_request(client, shop):
    assert "Out of stock" in client.get(shop["cap"].get_absolute_url()).content.decode()
    assert "Price on request" in client.get(shop["pan"].get_absolute_url()).content.decode()


def test_inactive_and_unknown_products_are_404(client, shop):
    hidden = shop["kitchen"].products.get(title="Hidden")
    assert client.get(hidden.get_absolute_url()).status_code == 404
    assert client.get("/products/no-such-thing/").status_code == 404


def test_static_assets_are_served(client):
    response = client.get("/static/css/vitrine.css")
    assert response.status_code == 200


def test_favicon_is_served_where_browsers_ask_for_it(client):
    """Browsers ask every site for /favicon.ico (the admin's pages link no icon): an icon, not a 404 in the console."""
    response = client.get("/favicon.ico")
    assert response.status_code == 200 and response["Content-Type"] == "image/x-icon"
    assert b"".join(response.streaming_content)[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert 'rel="icon"' in client.get("/").content.decode()
