from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from tests.imagefactory import image_bytes


@pytest.fixture(autouse=True)
def _media_root(settings: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Every test writes media into its own folder."""
    media = tmp_path / "media"
    media.mkdir()
    settings.MEDIA_ROOT = media  # type: ignore[attr-defined]
    return media


@pytest.fixture
def make_product(db: None) -> Callable[..., object]:
    from catalog import services

    def make(
        title: str = "Blue shirt",
        *,
        images: int = 1,
        category: object = None,
        price: Decimal | None = Decimal("19.90"),
        stock: int = 5,
        **kwargs: object,
    ) -> object:
        product = services.product_create(title=title, category=category, price=price, stock=stock, **kwargs)
        for i in range(images):
            services.product_image_add(product=product, file=image_bytes(color=(40 * i % 256, 90, 160)))
        return product

    return make


@pytest.fixture
def staff_client(client, django_user_model):  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_user(
        "staff", "staff@example.com", "pw-staff-123", is_staff=True, is_superuser=True
    )
    client.force_login(user)
    return client
