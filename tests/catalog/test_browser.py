"""The shop and the upload page in real Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import base64
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from catalog import services
from catalog.models import Product
from tests.factories import add_image
from tests.imagefactory import image_bytes, truncated_jpeg

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _images_loaded(page) -> bool:  # type: ignore[no-untyped-def]
    return page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")


def test_shopper_browses_to_a_product_and_flips_through_its_gallery(page):
    category = services.category_from_path(path="Outdoor")
    tent = services.product_create(title="Dome tent", category=category, price=Decimal("129.00"), stock=2)
    for color in ((200, 0, 0), (0, 160, 0), (0, 0, 200)):
        add_image(tent, color=color, size=(320, 240))
    add_image(services.product_create(title="Camping stove", category=category, stock=1))

    page.goto("/")
    page.get_by_role("link", name="Outdoor 2 products").click()
    page.wait_for_url("**/products/?category=outdoor")
    assert page.locator(".card").count() == 2
    assert _images_loaded(page)
    page.get_by_role("link", name="Dome tent").click()
    page.wait_for_url(f"**{tent.get_absolute_url()}")
    assert page.locator(".price.big").inner_text() == "€129.00"
    main = page.locator("[data-gallery-main]")
    first_src = main.get_attribute("src")
    page.get_by_role("button", name="Show image 3").click()
    assert main.get_attribute("src") != first_src
    assert page.locator(".thumb.is-current").get_attribute("aria-label") == "Show image 3"
    page.wait_for_function("document.querySelector('[data-gallery-main]').naturalWidth > 0")


def test_staff_drop_many_images_onto_the_upload_page(page, live_server):
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user("staff", password="pw-staff-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["add_product", "add_productimage"]))
    client = Client()
    client.force_login(user)
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    page.goto("/staff/upload/")
    files = {
        "red-lamp.png": image_bytes(size=(200, 200)),
        "green_chair.png": image_bytes(size=(200, 150)),
        "broken.jpg": truncated_jpeg(),
    }
    payload = [
        {"name": n, "b64": base64.b64encode(d).decode(), "type": "image/jpeg" if n.endswith("jpg") else "image/png"}
        for n, d in files.items()
    ]
    # A real drop event carrying files, as the browser would deliver it from the desktop.
    page.evaluate(
        """(files) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), c => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, {type: f.type}));
            }
            const zone = document.querySelector('[data-dropzone]');
            zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        payload,
    )
    assert page.locator("[data-drop-list] li").count() == 3
    assert not page.locator("[data-one-product]").first.is_visible()  # per-image mode hides product fields
    page.get_by_role("button", name="Upload").click()
    page.wait_for_selector(".outcomes")
    rows = page.locator(".outcomes tbody tr")
    assert rows.count() == 3
    assert "corrupt or truncated" in page.locator(".outcome-failed").inner_text()
    assert sorted(Product.objects.values_list("title", flat=True)) == ["Green chair", "Red lamp"]
