"""Every shopper page, the staff upload page and the admin under the Content-Security-Policy, in real Chromium:
no violation reported, and the controls that used inline handlers still work (issue 14, item 13)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from search.indexing import bulk
from tests.factories import CategoryFactory, ProductFactory, add_image
from tests.imagefactory import image_bytes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(
  `${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));
"""


@pytest.fixture
def shop(use_spaces, settings):  # type: ignore[no-untyped-def]
    use_spaces("pixels", "text")
    settings.VITRINE_PRIMARY_IMAGE_SPACE = settings.VITRINE_FALLBACK_IMAGE_SPACE = "pixels"
    settings.VITRINE_RATE_LIMITS = {}
    mugs, shirts = CategoryFactory(name="Mugs", slug="mugs"), CategoryFactory(name="Shirts", slug="shirts")
    products = []
    for i in range(4):
        mug = ProductFactory(category=mugs, title=f"Red enamel mug {i}", description="A sturdy mug", stock=i % 2)
        add_image(mug, color=(220 - 15 * i, 30, 30), size=(160, 160))
        shirt = ProductFactory(category=shirts, title=f"Blue linen shirt {i}", description="A cool summer shirt")
        add_image(shirt, color=(30, 40, 220 - 15 * i), size=(160, 160))
        products += [mug, shirt]
    bulk.images_embed_bulk(space="pixels")
    bulk.products_embed_bulk(space="text")
    return products


def test_no_page_breaks_the_content_security_policy(page, live_server, shop, tmp_path, screenshot):
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.add_init_script(WATCH)
    seen: list[str] = []

    def visit(path: str) -> None:
        response = page.goto(path)
        assert response is not None and response.status in (200, 404), (path, response and response.status)
        check(path, response.headers)

    def check(where: str, headers: dict[str, str] | None = None) -> None:
        if headers is not None:
            assert headers.get("content-security-policy") == settings.VITRINE_CSP, where
            assert "camera=()" in headers.get("permissions-policy", ""), where
        assert page.evaluate("window.__violations") == [], where
        seen.append(where)

    mug = shop[0]
    visit("/")
    visit("/products/?category=mugs")
    page.get_by_label("Sort").select_option("price")  # was onchange="this.form.submit()"
    page.wait_for_url("**sort=price**")
    check("sort")
    page.get_by_label("In stock only").check()
    page.wait_for_url("**in_stock=1**")
    check("in stock")
    visit(mug.get_absolute_url())
    page.get_by_label("Same category only").check()
    page.wait_for_url("**same_category=1")
    check("same category")
    assert page.locator("[data-similar] .card").count() == 3
    visit("/search/?q=linen+shirt")
    assert page.locator("[data-results] .card").count() == 4
    visit("/search/photo/")
    photo = tmp_path / "shirt.png"
    photo.write_bytes(image_bytes(size=(200, 200), color=(30, 50, 210)))
    page.set_input_files("input[type=file]", str(photo))
    page.wait_for_selector("[data-results]")
    check("photo results")
    visit("/no-such-page/")

    staff = get_user_model().objects.create_user("staff", password="pw-staff-123", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies["sessionid"].value,
                               "url": live_server.url}])  # fmt: skip
    visit("/staff/upload/")
    upload = tmp_path / "kettle.png"
    upload.write_bytes(image_bytes(size=(120, 90)))
    page.set_input_files("input[type=file]", str(upload))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_selector(".outcomes")
    check("upload outcome")
    for path in ("/admin/", f"/admin/catalog/product/{mug.pk}/change/", "/admin/catalog/product/",
                 "/admin/catalog/productimage/", "/admin/search/spacestate/"):  # fmt: skip
        visit(path)
    screenshot(page, "admin-spaces")
    visit(f"/admin/catalog/product/{mug.pk}/change/")
    screenshot(page, "admin-product")
    assert page.locator("img.vt-thumb-72").first.evaluate("img => img.getBoundingClientRect().width") <= 72
    reported = [line for line in console if "Content Security Policy" in line or "Permissions-Policy" in line]
    assert reported == [], reported
    assert len(seen) == 18
