"""Anonymous photo search under hostile input: bounded decode work, bounded memory, bodies refused unread
(issue 14, items 7-9). Figures (time, worker memory) come from scripts/bench_hostile_photos.py, not from here."""

from __future__ import annotations

import io
import socket
from urllib.parse import urlsplit

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse
from PIL import Image

from catalog import imaging, services
from catalog.models import Product
from tests.factories import upload
from tests.imagefactory import image_bytes, one_colour, progressive_jpeg_many_scans

pytestmark = pytest.mark.django_db
UPLOAD = reverse("catalog:staff_upload")
CAP = 40_000_000


@pytest.fixture
def quiet(settings):  # type: ignore[no-untyped-def]
    settings.VITRINE_RATE_LIMITS = {}
    settings.VITRINE_ENABLED_SPACES = ["pixels"]
    return settings


@pytest.fixture(scope="module")
def many_scans() -> bytes:
    return progressive_jpeg_many_scans(side=1000, scans=1500)


def test_a_progressive_jpeg_of_thousands_of_scans_is_refused_before_decoding(quiet, staff_client, many_scans):
    """Item 7: each repeated scan costs a pass over every block; 5,000 kept a worker busy for 15 s."""
    with pytest.raises(imaging.ImageRejected, match="more than 100 scans"):
        imaging.inspect(many_scans, max_pixels=CAP, max_scans=100)
    api = Client().post("/api/search/image", {"image": upload("scans.jpg", many_scans, "image/jpeg")})
    assert api.status_code == 400 and "scans" in api.json()["error"]
    page = staff_client.post(UPLOAD, {"mode": "per_image", "images": [upload("scans.jpg", many_scans, "image/jpeg")]})
    assert "scans" in page.context["outcomes"][0].reason and not Product.objects.exists()
    normal = io.BytesIO()
    Image.new("RGB", (300, 200), (9, 99, 199)).save(normal, format="JPEG", progressive=True)
    assert imaging.inspect(normal.getvalue(), max_pixels=CAP, max_scans=100).width == 300  # ~10 scans is normal


def test_photo_search_has_a_pixel_cap_of_its_own_far_below_staff_uploads(quiet, staff_client):
    """Item 8: a 6300x6300 one-colour PNG of 150 KB grew a web worker by 900 MiB on anonymous photo search."""
    assert quiet.VITRINE_PHOTO_MAX_PIXELS * 2 <= quiet.VITRINE_MAX_IMAGE_PIXELS
    big = one_colour("PNG", side=5000)  # 25 megapixels: fine for staff, too many for a query
    api = Client().post("/api/search/image", {"image": upload("big.png", big)})
    assert api.status_code == 400 and "25.0 megapixels, over the limit of 16.0" in api.json()["error"]
    page = Client().post("/search/photo/", {"image": upload("big.png", big)})
    assert page.status_code == 400 and "over the limit of 16.0 megapixels" in page.content.decode()
    staff = staff_client.post(UPLOAD, {"mode": "per_image", "images": [upload("big.png", big)]})
    assert staff.context["outcomes"][0].status == "imported"


def test_photo_queries_are_decoded_at_reduced_size(quiet):
    """A query needs a few hundred pixels a side: JPEGs decode at a DCT scale (draft), others are shrunk
    before any conversion, and nothing of the full-size decode is kept."""
    jpeg = image_bytes("JPEG", size=(4000, 3000), color=(200, 120, 40))
    query = services.query_image_inspect(jpeg)
    assert query.decoded is None and (query.width, query.height) == (4000, 3000)
    assert query.rgb.size == (683, 512)
    png = services.query_image_inspect(image_bytes("PNG", size=(3000, 4000), mode="RGBA", color=(0, 0, 255, 255)))
    assert png.rgb.mode == "RGB" and png.rgb.size == (512, 683) and png.rgb.getpixel((100, 100)) == (0, 0, 255)
    stored = services.image_inspect(jpeg)
    assert stored.rgb.size == (4000, 3000)  # staff uploads keep every pixel


def test_decoding_stops_when_its_time_budget_is_spent(many_scans):
    """The wall-clock budget is checked as the decoder reads the file, so a slow decode stops part-way."""
    with pytest.raises(imaging.ImageRejected, match="took too long to decode"):
        imaging.inspect(many_scans, max_pixels=CAP, budget_s=0.0)
    assert imaging.inspect(many_scans, max_pixels=CAP, budget_s=None).width == 1000


def _post_head(url: str, length: int, content_type: str, sent: bytes) -> str:
    """Send a request's headers and only ``sent`` of its ``length``-byte body; return the status line."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = (f"POST {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.hostname}\r\nContent-Type: {content_type}"
                f"\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")  # fmt: skip
        sock.sendall(head.encode() + sent)
        # A server that reads the body first waits here for bytes that never come, and the read times out.
        return sock.makefile("rb").readline().decode()


@pytest.mark.django_db(transaction=True)
def test_a_body_too_big_for_its_page_is_refused_from_its_content_length(live_server, settings):
    """Item 9: a 286 MB photo was read in full (to a temporary file) before the 30 MB check."""
    settings.VITRINE_RATE_LIMITS = {}
    boundary = "----x"
    sent = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + b"\xff\xd8" + b"\x00" * 65536  # fmt: skip
    kind = f"multipart/form-data; boundary={boundary}"
    for path in ("/api/search/image?k=3", "/search/photo/?", "/staff/upload/?"):
        status = _post_head(live_server.url + path, 300 * 1024 * 1024, kind, sent)
        assert status.startswith("HTTP/1.1 413"), (path, status)
    just_over = settings.VITRINE_PHOTO_MAX_BYTES + 128 * 1024
    assert _post_head(live_server.url + "/api/search/image?", just_over, kind, sent).startswith("HTTP/1.1 413")


def test_a_file_over_the_limit_stops_being_kept_as_the_body_streams(settings, staff_client):
    """Within an accepted body, a file past the per-file limit is counted but not kept: it reaches the
    checks as an empty upload of its real size, and is refused with that size."""
    from catalog.views import staff_upload
    from config.middleware import UploadLimitsMiddleware

    settings.VITRINE_MAX_UPLOAD_BYTES = 200_000
    big = image_bytes(size=(800, 800)) + b"\x00" * 600_000
    request = RequestFactory().post(UPLOAD, {"mode": "per_image", "images": [upload("big.png", big)]})
    request.user = type("SignedIn", (), {"is_authenticated": True})()
    assert UploadLimitsMiddleware(lambda r: None).process_view(request, staff_upload, (), {}) is None
    kept = request.FILES["images"]
    assert kept.size == len(big) and kept.read() == b""
    files = [upload("ok.png", image_bytes()), upload("big.png", big)]
    response = staff_client.post(UPLOAD, {"mode": "per_image", "images": files})
    reasons = {o.name: o.reason for o in response.context["outcomes"]}
    assert reasons == {"ok.png": "", "big.png": "the file is 0.6 MB; the limit is 0.2 MB"}
