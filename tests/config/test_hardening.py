"""Hostile input, access control, rate limits and health: each done for real against the running stack."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from PIL import Image

from catalog.models import Product, ProductImage
from tests.factories import ProductFactory, add_image, upload
from tests.imagefactory import image_bytes

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db

UPLOAD = reverse("catalog:staff_upload")


def _tiff() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(out, format="TIFF")
    return out.getvalue()


DISGUISED = {
    "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "html": b"<!doctype html><html><body><script>alert(1)</script></body></html>",
    "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    "zip": b"PK\x03\x04" + b"\x00" * 60,
    "tiff": _tiff(),
}


@pytest.mark.parametrize("kind", list(DISGUISED))
def test_disguised_files_are_refused_everywhere(staff_client, kind):
    data = DISGUISED[kind]
    response = staff_client.post(UPLOAD, {"mode": "per_image", "images": [upload(f"photo-{kind}.jpg", data)]})
    assert response.status_code == 400 and not Product.objects.exists()
    outcome = response.context["outcomes"][0]
    assert outcome.status == "failed"
    assert "not an image file" in outcome.reason or "unsupported image format TIFF" in outcome.reason
    api = Client().post("/api/search/image", {"image": upload(f"x-{kind}.png", data)})
    assert api.status_code == 400 and api.json()["error"].startswith("image rejected:")


def test_stored_images_are_reencoded_with_generated_names(staff_client, settings):
    exif = Image.Exif()
    exif[0x010E] = "secret description"
    source = io.BytesIO()
    Image.new("RGB", (80, 60), (200, 10, 10)).save(source, format="JPEG", exif=exif)
    payload = source.getvalue() + b"<script>alert('trailing payload')</script>"
    staff_client.post(UPLOAD, {"mode": "per_image", "images": [upload("../../evil name.jpg", payload)]})
    image = ProductImage.objects.get()
    stored = (Path(settings.MEDIA_ROOT) / image.file.name).read_bytes()
    assert b"trailing payload" not in stored and b"secret description" not in stored
    assert image.file.name.startswith("products/originals/") and "evil" not in image.file.name
    with Image.open(io.BytesIO(stored)) as reread:
        assert reread.size == (80, 60) and not reread.getexif()


def test_media_are_served_with_their_type_and_nosniff(client):
    image = add_image(ProductFactory())
    response = client.get(image.thumbnail.url)
    assert response["Content-Type"] == "image/jpeg" and response["X-Content-Type-Options"] == "nosniff"


def test_more_than_100_files_is_a_clear_400(staff_client):
    files = [upload(f"f{i}.png", b"x") for i in range(101)]
    response = staff_client.post(UPLOAD, {"mode": "per_image", "images": files})
    assert response.status_code == 400 and "at most 100" in response.content.decode()
    api = Client().post("/api/search/image", {"image": files[:1], **{f"f{i}": files[i] for i in range(1, 101)}})
    assert api.status_code == 400 and "at most 100" in api.json()["error"]


@pytest.mark.parametrize("url", [
    "/search/?q=tea%00mug", "/products/?category=%00", "/api/search?q=%00", "/staff/compare/?product=%00",
    "/api/products/1/similar?space=cnn%00",
])  # fmt: skip
def test_nul_bytes_are_a_400(client, url):
    assert client.get(url).status_code == 400


@pytest.mark.parametrize("query", [
    "x" * 10_000, "a & | ! ( ) :* <-> 'b\\", "!!!", "☕ 🍵 ✨ mug", "ספל תה אדום", "كوب شاي", "%_\\", "OR 1=1 --",
])  # fmt: skip
def test_hostile_queries_get_an_answer_or_a_400(client, settings, query):
    settings.VITRINE_RATE_LIMITS = {}
    settings.VITRINE_ENABLED_SPACES = ["pixels"]
    for response in (client.get("/search/", {"q": query}), client.get("/api/search", {"q": query})):
        assert response.status_code in (200, 400), (query[:30], response.status_code)
    assert client.get("/api/search", {"q": "x" * 10_000}).status_code == 400


def test_staff_pages_are_closed_to_anonymous_and_shoppers(client, django_user_model):
    pages = [UPLOAD, reverse("search:compare"), "/admin/", "/admin/search/spacestate/", "/admin/catalog/product/"]
    for url in pages:
        assert client.get(url).status_code == 302, url
    client.force_login(django_user_model.objects.create_user("shopper", password="pw-shopper-123"))
    for url in pages:
        assert client.get(url).status_code in (302, 403), url
    assert client.post(UPLOAD, {"mode": "per_image"}).status_code in (302, 403)


def test_csrf_is_enforced_on_forms(django_user_model):
    staff = django_user_model.objects.create_user("staff2", password="pw-staff-123", is_staff=True,
                                                  is_superuser=True)  # fmt: skip
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.post(UPLOAD, {"mode": "per_image", "images": [upload("a.png", image_bytes())]}).status_code == 403
    assert client.post("/search/photo/", {"image": upload("a.png", image_bytes())}).status_code == 403
    assert client.post("/admin/catalog/product/add/", {"title": "x"}).status_code == 403
    assert Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "staff2"}).status_code == 403
    assert not Product.objects.exists()


def _fresh_window() -> None:
    if time.time() % 60 > 50:  # the counters are per minute: don't straddle a boundary
        time.sleep(61 - time.time() % 60)


def test_search_is_rate_limited_with_counts_shared_across_processes(client, settings):
    settings.VITRINE_RATE_LIMITS = {"search": 4, "photo": 2}
    settings.VITRINE_ENABLED_SPACES = ["pixels"]
    _fresh_window()
    address = f"198.51.100.{os.getpid() % 250}"
    for _ in range(2):
        assert client.get("/api/search", {"q": "mug"}, REMOTE_ADDR=address).status_code == 200
    # Another process (another web worker, say) spends two more of the same client's requests.
    code = (
        "import django; django.setup(); from config.ratelimit import hit; "
        f"print(hit('search', {address!r}, 4), hit('search', {address!r}, 4))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("True True"), out.stderr[-2000:]
    blocked = client.get("/api/search", {"q": "mug"}, REMOTE_ADDR=address)
    assert blocked.status_code == 429 and "at most 4 a minute" in blocked.json()["error"]
    assert client.get("/search/", {"q": "mug"}, REMOTE_ADDR=address).status_code == 429
    assert client.get("/search/", {"q": "mug"}, REMOTE_ADDR="203.0.113.9").status_code == 200  # others unaffected


def test_health_endpoints(staff_client, settings):
    assert staff_client.get("/healthz").json() == {"status": "ok"}
    settings.VITRINE_ENABLED_SPACES = ["pixels", "simclr"]
    response = staff_client.get("/readyz")
    body = response.json()
    assert response.status_code == 200 and body["ready"]
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    assert set(body["checks"]["spaces"]) == {"pixels", "simclr"}


def test_production_settings_need_their_secrets(tmp_path):
    base = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL",
                                                              "ALLOWED_HOSTS"}}  # fmt: skip
    base["DJANGO_SETTINGS_MODULE"] = "config.settings.production"
    missing = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=base, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert missing.returncode != 0 and "SECRET_KEY must be set in production" in missing.stderr
    full = {**base, "SECRET_KEY": "x" * 60 + "-Vitrine-Test-Only-9f3k2", "DATABASE_URL": "postgres://u:p@localhost/db",
            "CELERY_BROKER_URL": "redis://localhost:6379/0", "ALLOWED_HOSTS": "shop.example.com"}  # fmt: skip
    deploy = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            env=full, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert deploy.returncode == 0, deploy.stderr[-2000:]
    assert settings.DEBUG is False and get_user_model()


def _staff_without_permissions(django_user_model, *codenames: str):  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import Permission

    name = "clerk-" + "-".join(sorted(codenames))
    user = django_user_model.objects.create_user(name[:150], password="pw-clerk-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_the_upload_page_needs_the_catalogue_permissions(django_user_model):
    """Issue 14, item 12: a staff user with no permissions created products and added images to any product."""
    product = ProductFactory(title="Someone else's tent")
    nobody = _staff_without_permissions(django_user_model)
    assert nobody.get(UPLOAD).status_code == 403
    per_image = {"mode": "per_image", "images": [upload("lamp.png", image_bytes())]}
    assert nobody.post(UPLOAD, per_image).status_code == 403
    onto = {"mode": "one_product", "product": product.pk, "images": [upload("tent.png", image_bytes())]}
    assert nobody.post(UPLOAD, onto).status_code == 403
    assert Product.objects.count() == 1 and not ProductImage.objects.exists()

    # Adding images but not products: the existing product needs the change permission too.
    adder = _staff_without_permissions(django_user_model, "add_productimage", "add_product")
    assert adder.get(UPLOAD).status_code == 200
    refused = adder.post(UPLOAD, {**onto, "images": [upload("tent.png", image_bytes())]})
    assert refused.status_code == 403 and not ProductImage.objects.exists()
    created = adder.post(UPLOAD, {**per_image, "images": [upload("lamp.png", image_bytes())]})
    assert created.status_code == 200 and Product.objects.filter(title="Lamp").exists()
    editor = _staff_without_permissions(django_user_model, "add_productimage", "change_product")
    assert editor.post(UPLOAD, {**onto, "images": [upload("tent.png", image_bytes())]}).status_code == 200
    assert editor.post(UPLOAD, {**per_image, "images": [upload("x.png", image_bytes())]}).status_code == 403
    assert product.images.count() == 1


def test_space_admin_change_view_honours_view_permission_and_odd_ids(django_user_model, staff_client):
    """Issue 14, items 5 and 12: /admin/search/spacestate/abc/change/ was a 500; without view permission a
    staff user still saw a space's page."""
    from search.models import SpaceState

    state = SpaceState.objects.create(key="pixels", available=True)
    url = f"/admin/search/spacestate/{state.pk}/change/"
    for odd in ("abc", "1.5", "99999999999999999999999", "%00"):
        response = staff_client.get(f"/admin/search/spacestate/{odd}/change/")
        assert response.status_code in (302, 400, 404), (odd, response.status_code)
    nobody = _staff_without_permissions(django_user_model)
    assert nobody.get("/admin/search/spacestate/").status_code == 403
    assert nobody.get(url).status_code == 403
    viewer = _staff_without_permissions(django_user_model, "view_spacestate")
    page = viewer.get(url)
    assert page.status_code == 200 and "Reindex all" not in page.content.decode()


def test_readyz_tells_anonymous_callers_only_whether_the_shop_is_ready(client, settings, django_user_model):
    """Issue 14, item 14: /readyz gave anyone worker host names and model error reasons."""
    settings.VITRINE_ENABLED_SPACES = ["pixels", "simclr"]
    settings.VITRINE_READYZ_TOKEN = "s3cret-probe-token"
    from search.models import SpaceState

    SpaceState.objects.create(key="simclr", available=False, reason="checkpoint /srv/models/secret.ckpt missing")
    anonymous = client.get("/readyz")
    assert anonymous.status_code == 200 and anonymous.json() == {"ready": True}
    assert client.get("/readyz", HTTP_AUTHORIZATION="Bearer wrong").json() == {"ready": True}
    with_token = client.get("/readyz", HTTP_AUTHORIZATION="Bearer s3cret-probe-token").json()
    assert "secret.ckpt" in with_token["checks"]["spaces"]["simclr"]["reason"]
    staff = _staff_without_permissions(django_user_model)
    details = staff.get("/readyz").json()
    assert details["ready"] and details["checks"]["database"]["ok"] and "simclr" in details["checks"]["spaces"]
