"""What the shop stores of an upload: pixels only, in a format that can hold them (issue 14, items 4 and 10)."""

from __future__ import annotations

import io
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse
from PIL import Image

from catalog import services
from catalog.models import Product, ProductImage
from tests.factories import ProductFactory, upload
from tests.imagefactory import SCRIPT, icc_profile, image_bytes, jpeg_segments, long_png, with_metadata

pytestmark = pytest.mark.django_db
UPLOAD = reverse("catalog:staff_upload")

# Byte strings that only metadata puts in a file: chunk and segment names, the payload itself.
METADATA_MARKS = [SCRIPT, b"<script", b"Exif", b"ICC_PROFILE", b"iCCP", b"tEXt", b"zTXt", b"iTXt", b"eXIf",
                  b"http://ns.adobe.com", b"XMP", b"Vitrine test profile"]  # fmt: skip

# What Pillow reports of a file it wrote itself: encoding facts, not metadata.
ENCODER_INFO = {"jfif", "jfif_version", "jfif_unit", "jfif_density", "progressive", "progression", "dpi"}


def stored_files(image: ProductImage, media: Path) -> dict[str, bytes]:
    return {field: (media / getattr(image, field).name).read_bytes() for field in ("file", "thumbnail", "display")}


def assert_pixels_only(files: dict[str, bytes]) -> None:
    for field, data in files.items():
        found = [mark for mark in METADATA_MARKS if mark in data]
        assert not found, f"{field} keeps {found}"
        if data[:2] == b"\xff\xd8":
            # Only the segments pixels need: JFIF header, tables, frame, scans.
            allowed = {0xD8, 0xE0, 0xDB, 0xC0, 0xC2, 0xC4, 0xDA, 0xD9, 0xDD}
            assert {marker for marker, _, _ in jpeg_segments(data)} <= allowed, field
        with Image.open(io.BytesIO(data)) as reread:
            assert not set(reread.info) - ENCODER_INFO, (field, reread.info)


@pytest.mark.parametrize("fmt, mode", [("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "RGBA"), ("GIF", "RGB"),
                                       ("WEBP", "RGB"), ("WEBP", "RGBA")])  # fmt: skip
def test_stored_copies_carry_pixels_only(_media_root, fmt, mode):
    """Item 10: a JPEG comment, a GIF comment, EXIF, XMP, PNG text chunks and ICC profiles all survived
    "re-encoding" (Pillow copies info["comment"] and a PNG's icc_profile on save)."""
    data = with_metadata(fmt, mode=mode, color=(200, 40, 40, 255)[: len(mode)])
    assert SCRIPT in data or fmt == "PNG"  # (the PNG's copy of it sits in compressed chunks too)
    image = services.product_image_add(product=ProductFactory(), file=data)
    assert_pixels_only(stored_files(image, _media_root))


def test_a_colour_profile_is_applied_before_it_is_dropped(_media_root):
    """Pixels tagged with a profile whose red is sRGB's green are stored green: the profile is honoured
    (converted to sRGB) and then dropped, in the original and in the derived copies, with or without alpha."""
    for mode, color in (("RGB", (255, 0, 0)), ("RGBA", (255, 0, 0, 255))):
        out = io.BytesIO()
        Image.new(mode, (40, 30), color).save(out, format="PNG", icc_profile=icc_profile(swap_red_green=True))
        image = services.product_image_add(product=ProductFactory(), file=out.getvalue())
        files = stored_files(image, _media_root)
        assert_pixels_only(files)
        for field, data in files.items():
            r, g, b = Image.open(io.BytesIO(data)).convert("RGB").getpixel((20, 15))
            assert g > 200 and r < 60 and b < 60, (mode, field, (r, g, b))


def test_a_side_longer_than_jpeg_holds_is_stored_among_good_files_on_the_upload_page(staff_client, _media_root):
    """Item 4: a 1x70000 PNG (a few hundred bytes) was a 500 ("broken data stream when writing image file")
    after the files before it were committed. Each file gets its own outcome; the long one is kept as PNG."""
    files = [upload("first.png", image_bytes()), upload("ribbon.png", long_png()), upload("last.png", image_bytes())]
    response = staff_client.post(UPLOAD, {"mode": "per_image", "images": files})
    assert response.status_code == 200
    outcomes = {o.name: o for o in response.context["outcomes"]}
    assert [o.status for o in outcomes.values()] == ["imported"] * 3
    ribbon = outcomes["ribbon.png"].image
    assert ribbon.file.name.endswith(".png") and (ribbon.width, ribbon.height) == (1, 70_000)
    with Image.open(_media_root / ribbon.file.name) as stored:
        assert stored.size == (1, 70_000) and np.asarray(stored.convert("L")).mean() == pytest.approx(128, abs=1)
    with Image.open(_media_root / ribbon.display.name) as display:
        assert display.format == "JPEG" and max(display.size) <= 1200


def test_a_long_image_in_the_admin_inline_and_the_importer(staff_client, tmp_path):
    product = ProductFactory(title="Ribbon")
    management = {"images-TOTAL_FORMS": "1", "images-INITIAL_FORMS": "0", "images-MIN_NUM_FORMS": "0",
                  "images-MAX_NUM_FORMS": "1000"}  # fmt: skip
    response = staff_client.post(
        reverse("admin:catalog_product_change", args=[product.pk]),
        {"title": "Ribbon", "slug": product.slug, "sku": product.sku, "price": "1", "currency": "EUR", "stock": "1",
         "is_active": "on", "attributes": "{}", **management, "images-0-file": upload("r.png", long_png()),
         "images-0-position": "0"},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert product.images.get().file.name.endswith(".png")
    folder = tmp_path / "import" / "ribbons"
    folder.mkdir(parents=True)
    (folder / "tall.png").write_bytes(long_png(height=66_000))
    out = StringIO()
    call_command("import_images", str(folder.parent), stdout=out, no_progress=True)
    assert "Imported 1 file(s)" in out.getvalue() and Product.objects.filter(title="Tall").exists()


def test_an_image_that_cannot_be_stored_is_refused_with_its_reason_and_the_rest_kept(staff_client, monkeypatch):
    """Whatever the encoder refuses becomes that file's reason, never a 500 for the whole upload."""
    from catalog import imaging

    good, odd, odd_again = image_bytes(), image_bytes(size=(3, 3)), image_bytes(size=(3, 3))
    real_save = Image.Image.save

    def fussy_save(self, fp, format=None, **params):  # type: ignore[no-untyped-def]
        if self.size == (3, 3):
            raise OSError("encoder error -2")
        return real_save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", fussy_save)
    files = [upload("good.png", good), upload("odd.png", odd)]
    response = staff_client.post(UPLOAD, {"mode": "per_image", "images": files})
    assert response.status_code == 200
    statuses = {o.name: (o.status, o.reason) for o in response.context["outcomes"]}
    assert statuses["good.png"] == ("imported", "")
    assert statuses["odd.png"][0] == "failed" and "cannot be stored" in statuses["odd.png"][1]
    assert Product.objects.count() == 1
    with pytest.raises(imaging.ImageRejected, match="cannot be stored"):
        services.product_image_add(product=ProductFactory(), file=odd_again)
