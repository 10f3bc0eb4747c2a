from __future__ import annotations

from decimal import Decimal

import factory
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services
from catalog.models import Category, Product, ProductImage
from tests.imagefactory import image_bytes


class CategoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Category

    name = factory.Sequence(lambda n: f"Category {n}")
    slug = factory.Sequence(lambda n: f"category-{n}")


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    title = factory.Sequence(lambda n: f"Product {n}")
    slug = factory.Sequence(lambda n: f"product-{n}")
    sku = factory.Sequence(lambda n: f"SKU-{n:05d}")
    price = Decimal("12.50")
    stock = 3
    category = factory.SubFactory(CategoryFactory)


def add_image(product: Product, **kwargs: object) -> ProductImage:
    """Attach a real, unique image through the service every upload path uses."""
    return services.product_image_add(product=product, file=image_bytes(**kwargs))  # type: ignore[arg-type]


def upload(name: str, data: bytes, content_type: str = "image/png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)
