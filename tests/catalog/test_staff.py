import re

import pytest
from django.urls import reverse

from catalog.models import Product, ProductImage
from tests.factories import ProductFactory, add_image, upload
from tests.imagefactory import image_bytes, truncated_jpeg

pytestmark = pytest.mark.django_db
UPLOAD = reverse("catalog:staff_upload")


def test_upload_page_is_staff_only(client, django_user_model):
    assert client.get(UPLOAD).status_code == 302
    shopper = django_user_model.objects.create_user("shopper", password="x-shopper-1")
    client.force_login(shopper)
    response = client.get(UPLOAD)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert client.post(UPLOAD, {"mode": "per_image", "images": [upload("a.png", image_bytes())]}).status_code == 302
    assert not Product.objects.exists()


def test_upload_one_product_per_image(staff_client):
    files = [
        upload("red_scarf.png", image_bytes()),
        upload("green-hat.jpg", image_bytes("JPEG"), "image/jpeg"),
        upload("broken.jpg", truncated_jpeg(), "image/jpeg"),
        upload("notes.png", b"just text", "text/plain"),
    ]
    response = staff_client.post(UPLOAD, {"mode": "per_image", "images": files, "price": "15", "stock": "2"})
    assert response.status_code == 200
    assert sorted(Product.objects.values_list("title", flat=True)) == ["Green hat", "Red scarf"]
    assert all(p.stock == 2 and p.price == 15 for p in Product.objects.all())
    html = response.content.decode()
    assert re.search(r"broken\.jpg</td><td>failed</td>\s*<td>corrupt or truncated image", html)
    assert re.search(r"notes\.png</td><td>failed</td>\s*<td>not an image file", html)


def test_upload_all_images_to_an_existing_product(staff_client):
    product = ProductFactory(title="Tent")
    add_image(product)
    files = [upload(f"tent-{i}.png", image_bytes()) for i in range(3)]
    response = staff_client.post(UPLOAD, {"mode": "one_product", "product": product.pk, "images": files})
    assert response.status_code == 200
    assert product.images.count() == 4 and product.images.filter(is_primary=True).count() == 1
    assert Product.objects.count() == 1


def test_upload_all_images_to_a_new_product(staff_client):
    files = [upload(f"kettle-{i}.png", image_bytes()) for i in range(2)]
    staff_client.post(UPLOAD, {"mode": "one_product", "new_title": "Steel kettle", "images": files})
    product = Product.objects.get(title="Steel kettle")
    assert product.images.count() == 2


def test_upload_of_only_bad_files_is_a_400_and_creates_nothing(staff_client):
    response = staff_client.post(
        UPLOAD,
        {"mode": "one_product", "new_title": "Ghost", "images": [upload("x.jpg", truncated_jpeg(), "image/jpeg")]},
    )
    assert response.status_code == 400
    assert not Product.objects.exists()


def test_upload_without_files_or_target_explains(staff_client):
    response = staff_client.post(UPLOAD, {"mode": "per_image"})
    assert response.status_code == 400 and "at least one image" in response.content.decode()
    response = staff_client.post(UPLOAD, {"mode": "one_product", "images": [upload("a.png", image_bytes())]})
    assert response.status_code == 400 and "Pick the product" in response.content.decode()


def _inline_management(prefix: str = "images", total: int = 1, initial: int = 0) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def _product_form(**overrides):
    data = {
        "title": "Admin lamp",
        "slug": "admin-lamp",
        "sku": "LAMP-1",
        "description": "",
        "price": "39.00",
        "currency": "EUR",
        "stock": "3",
        "is_active": "on",
        "color": "",
        "attributes": "{}",
    }
    data.update(overrides)
    return data


def test_admin_add_product_with_inline_image(staff_client):
    data = {
        **_product_form(),
        **_inline_management(),
        "images-0-file": upload("lamp.png", image_bytes()),
        "images-0-alt": "A lamp",
        "images-0-position": "0",
    }
    response = staff_client.post(reverse("admin:catalog_product_add"), data)
    assert response.status_code == 302, response.context["errors"] if response.context else response
    product = Product.objects.get(sku="LAMP-1")
    image = product.images.get()
    assert image.is_primary and image.alt == "A lamp" and image.thumbnail and image.width == 64


def test_admin_inline_rejects_a_bad_image_with_a_message(staff_client):
    data = {
        **_product_form(),
        **_inline_management(),
        "images-0-file": upload("lamp.jpg", truncated_jpeg(), "image/jpeg"),
        "images-0-position": "0",
    }
    response = staff_client.post(reverse("admin:catalog_product_add"), data)
    assert response.status_code == 200
    assert "lamp.jpg: corrupt or truncated image" in response.content.decode()
    assert not Product.objects.exists() and not ProductImage.objects.exists()


def test_admin_change_makes_another_image_primary(staff_client):
    product = ProductFactory(title="Admin lamp", slug="admin-lamp", sku="LAMP-1", price=39)
    first, second = add_image(product), add_image(product)
    data = {
        **_product_form(),
        **_inline_management(total=2, initial=2),
        "images-0-id": first.pk,
        "images-0-product": product.pk,
        "images-0-position": "0",
        "images-0-alt": "",
        "images-1-id": second.pk,
        "images-1-product": product.pk,
        "images-1-position": "1",
        "images-1-alt": "side",
        "images-1-make_primary": "on",
    }
    response = staff_client.post(reverse("admin:catalog_product_change", args=[product.pk]), data)
    assert response.status_code == 302
    second.refresh_from_db()
    first.refresh_from_db()
    assert second.is_primary and second.alt == "side" and not first.is_primary


def test_admin_lists_and_bulk_actions(staff_client, django_assert_max_num_queries):
    products = [ProductFactory() for _ in range(4)]
    for p in products:
        add_image(p)
    with django_assert_max_num_queries(12):
        response = staff_client.get(reverse("admin:catalog_product_changelist"), {"q": "Product"})
    assert response.status_code == 200 and response.context["cl"].result_count == 4
    url = reverse("admin:catalog_product_changelist")
    staff_client.post(url, {"action": "make_inactive", "_selected_action": [p.pk for p in products[:2]]})
    assert Product.objects.filter(is_active=False).count() == 2
    staff_client.post(url, {"action": "delete_with_images", "_selected_action": [products[3].pk]})
    assert Product.objects.count() == 3
    for name in ("admin:catalog_category_changelist", "admin:catalog_productimage_changelist"):
        assert staff_client.get(reverse(name)).status_code == 200
    image = products[0].images.get()
    assert staff_client.get(reverse("admin:catalog_productimage_change", args=[image.pk])).status_code == 200


def test_admin_generates_a_sku_when_none_is_given(staff_client):
    data = {**_product_form(sku=""), **_inline_management(total=0)}
    response = staff_client.post(reverse("admin:catalog_product_add"), data)
    assert response.status_code == 302, response.context["errors"] if response.context else response
    product = Product.objects.get()
    assert re.fullmatch(r"VT-[0-9A-F]{10}", product.sku)
    form = staff_client.get(reverse("admin:catalog_product_add")).content.decode()
    assert "Leave empty to have one generated" in form


def test_admin_says_a_chosen_image_must_be_chosen_again_after_an_error(staff_client):
    """A browser cannot keep a chosen file across a form with errors: the page says so instead of dropping it."""
    data = {**_product_form(title=""), **_inline_management(), "images-0-file": upload("lamp.png", image_bytes()),
            "images-0-position": "0"}  # fmt: skip
    response = staff_client.post(reverse("admin:catalog_product_add"), data)
    html = response.content.decode()
    assert response.status_code == 200 and "This field is required" in html
    assert "the image(s) you chose (lamp.png) are not kept: choose them again" in html
    assert not Product.objects.exists() and not ProductImage.objects.exists()


def test_upload_page_says_exactly_which_formats_it_takes(staff_client):
    from catalog import imaging

    html = staff_client.get(UPLOAD).content.decode()
    accepted = re.search(r"Accepted: ([^.;]+)", html)
    assert accepted is not None and accepted.group(1) == "JPEG, PNG, WebP or GIF"
    assert set(imaging.ALLOWED_FORMATS) == {"JPEG", "PNG", "WEBP", "GIF"}  # what the words above must follow
    assert "BMP" not in html and "TIFF" not in html
    bmp = staff_client.post(UPLOAD, {"mode": "per_image", "images": [upload("a.bmp", image_bytes("BMP"), "image/bmp")]})
    assert bmp.status_code == 400 and "a.bmp</td><td>failed" in bmp.content.decode()
