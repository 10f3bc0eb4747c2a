from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.db import IntegrityError
from PIL import Image

from catalog import services
from catalog.models import Category, Product, ProductImage
from catalog.services import DuplicateImage, ImageRejected
from tests.factories import add_image
from tests.imagefactory import image_bytes, truncated_jpeg

pytestmark = pytest.mark.django_db


def test_category_path_builds_a_tree_and_is_reused():
    shirts = services.category_from_path(path="Clothing / Shirts")
    assert shirts.path == "clothing/shirts" and shirts.parent.name == "Clothing"
    assert services.category_from_path(path=["clothing", "SHIRTS"]) == shirts
    assert Category.objects.count() == 2


def test_moving_a_category_moves_its_subtree():
    shirts = services.category_from_path(path="Clothing/Shirts/Linen")
    sale = services.category_from_path(path="Sale")
    clothing = Category.objects.get(slug="clothing")
    clothing.parent = sale
    clothing.save()
    shirts.refresh_from_db()
    assert shirts.path == "sale/clothing/shirts/linen"


def test_product_create_makes_unique_slugs_and_skus():
    a = services.product_create(title="Red Dress", price=Decimal("49.00"))
    b = services.product_create(title="Red  Dress")
    assert a.slug == "red-dress" and b.slug.startswith("red-dress-") and a.slug != b.slug
    assert a.sku != b.sku and a.sku.startswith("VT-")
    assert b.title == "Red Dress" and b.price is None


def test_product_create_rejects_negative_price_and_duplicate_sku():
    with pytest.raises(ValueError):
        services.product_create(title="x", price=Decimal("-1"))
    services.product_create(title="x", sku="A-1")
    with pytest.raises(Exception):  # noqa: B017 - full_clean's ValidationError
        services.product_create(title="y", sku="A-1")


def test_first_image_is_primary_and_files_are_stored_under_generated_names(settings):
    product = services.product_create(title="Lamp")
    data = image_bytes("PNG", mode="RGBA", color=(0, 0, 0, 0), size=(900, 600))
    first = services.product_image_add(product=product, file=data, alt="Lamp, lit")
    second = add_image(product)
    assert first.is_primary and not second.is_primary
    assert (first.position, second.position) == (0, 1)
    assert first.file.name == f"products/originals/{first.checksum[:2]}/{first.checksum}.png"
    original = Path(settings.MEDIA_ROOT) / first.file.name
    # Stored re-encoded from its pixels (transparency kept as PNG), not byte for byte.
    with Image.open(original) as stored:
        assert stored.format == "PNG" and stored.mode == "RGBA" and stored.size == (900, 600)
    assert str(original).startswith(str(settings.MEDIA_ROOT))
    with Image.open(Path(settings.MEDIA_ROOT) / first.thumbnail.name) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == settings.VITRINE_THUMBNAIL_SIZE
        assert thumb.getpixel((100, 100)) == (255, 255, 255)  # transparency flattened onto white
    assert (first.width, first.height, first.format) == (900, 600, "PNG")


def test_same_image_twice_is_a_duplicate_and_stores_nothing():
    product = services.product_create(title="Mug")
    data = image_bytes()
    services.product_image_add(product=product, file=data)
    files_before = sorted(default_storage.listdir("products/originals")[0])
    with pytest.raises(DuplicateImage, match="Mug"):
        services.product_image_add(product=services.product_create(title="Other"), file=data)
    assert ProductImage.objects.count() == 1
    assert sorted(default_storage.listdir("products/originals")[0]) == files_before


def test_rejected_image_leaves_no_row_and_no_file():
    product = services.product_create(title="Mug")
    with pytest.raises(ImageRejected):
        services.product_image_add(product=product, file=truncated_jpeg())
    assert not ProductImage.objects.exists()
    assert not default_storage.exists("products")


def test_set_primary_and_delete_promotes_the_next_image():
    product = services.product_create(title="Chair")
    first, _, third = (add_image(product) for _ in range(3))
    services.product_image_set_primary(image=third)
    assert list(product.images.filter(is_primary=True)) == [third]
    services.product_image_delete(image=third)
    first.refresh_from_db()
    assert first.is_primary and product.images.count() == 2


def test_database_refuses_two_primary_images():
    product = services.product_create(title="Chair")
    first = add_image(product)
    second = add_image(product)
    assert first.is_primary
    with pytest.raises(IntegrityError):
        ProductImage.objects.filter(pk=second.pk).update(is_primary=True)


def test_primary_true_demotes_the_old_primary():
    product = services.product_create(title="Desk")
    first = add_image(product)
    second = services.product_image_add(product=product, file=image_bytes(), primary=True)
    first.refresh_from_db()
    assert second.is_primary and not first.is_primary


def test_product_delete_removes_files(django_capture_on_commit_callbacks):
    product = services.product_create(title="Vase")
    image = add_image(product)
    names = [image.file.name, image.thumbnail.name, image.display.name]
    assert all(default_storage.exists(n) for n in names)
    with django_capture_on_commit_callbacks(execute=True):
        services.product_delete(product=product)
    assert not Product.objects.exists()
    assert not any(default_storage.exists(n) for n in names)


@pytest.mark.parametrize(
    "name, title",
    [
        ("red_summer-dress_02.jpg", "Red summer dress 02"),
        ("MUG.png", "MUG"),
        ("---.jpg", "Untitled product"),
    ],
)
def test_title_from_filename(name, title):
    assert services.title_from_filename(name) == title
