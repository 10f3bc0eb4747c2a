"""manage.py media_check: files against rows, both ways (issue 14, item 17)."""

from __future__ import annotations

import os
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import transaction

from catalog import services
from catalog.models import ProductImage
from tests.factories import ProductFactory, add_image
from tests.imagefactory import image_bytes

pytestmark = pytest.mark.django_db


def media_check(*args: str) -> str:
    out = StringIO()
    call_command("media_check", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def damaged(_media_root: Path) -> dict[str, object]:
    """A catalogue with a row whose original is gone and an upload rolled back after its files were stored."""
    kept = add_image(ProductFactory(title="Desk lamp"))
    broken = add_image(ProductFactory(title="Floor lamp"))
    (_media_root / broken.file.name).unlink()
    with pytest.raises(RuntimeError), transaction.atomic():
        services.product_image_add(product=ProductFactory(title="Ghost"), file=image_bytes(size=(300, 200)))
        raise RuntimeError("the outer transaction fails after the files were written")
    orphans = sorted(p for p in _media_root.rglob("*") if p.is_file()
                     and p.relative_to(_media_root).as_posix() not in _names())  # fmt: skip
    assert len(orphans) == 3  # original, thumbnail, display of the rolled-back upload
    return {"kept": kept, "broken": broken, "orphans": orphans}


def _names() -> set[str]:
    return {name for row in ProductImage.objects.values_list("file", "thumbnail", "display") for name in row}


def test_media_check_lists_missing_rows_and_orphans_with_sizes(damaged):
    out = media_check()
    broken = damaged["broken"]
    assert "Checked 2 image row(s) and 8 file(s)." in out
    assert f"image {broken.pk} of product {broken.product_id} “Floor lamp”: original {broken.file.name}" in out
    assert "Orphan files, referenced by no row (3, " in out
    for orphan in damaged["orphans"]:
        assert f"{orphan.relative_to(orphan.parents[3]).as_posix()}  {orphan.stat().st_size / 1024:.1f} KB" in out


def test_only_orphans_older_than_an_hour_are_deleted(damaged, _media_root):
    out = media_check("--delete-orphans")
    assert "Deleted 0 orphan file(s), 0.0 KB; kept 3 younger than an hour" in out
    assert all(orphan.exists() for orphan in damaged["orphans"])
    two_hours_ago = time.time() - 7200
    for orphan in damaged["orphans"][:2]:
        os.utime(orphan, (two_hours_ago, two_hours_ago))
    out = media_check("--delete-orphans")
    assert "Deleted 2 orphan file(s)" in out and "kept 1 younger than an hour" in out
    assert [orphan.exists() for orphan in damaged["orphans"]] == [False, False, True]
    kept = damaged["kept"]
    assert all((_media_root / f.name).exists() for f in (kept.file, kept.thumbnail, kept.display))


def test_an_old_orphan_reused_by_a_new_upload_is_not_deleted(_media_root):
    """The same bytes uploaded again reuse the orphaned files; deleting "old orphans" must then spare them."""
    data = image_bytes(size=(120, 90))
    with pytest.raises(RuntimeError), transaction.atomic():
        services.product_image_add(product=ProductFactory(), file=data)
        raise RuntimeError("rolled back")
    from catalog import media

    audit = media.media_audit()
    for orphan in audit.orphans:
        os.utime(_media_root / orphan.name, (time.time() - 7200, time.time() - 7200))
    audit = media.media_audit()
    image = services.product_image_add(product=ProductFactory(), file=data)  # after the audit, before deleting
    assert media.media_orphans_delete(audit=audit) == []
    assert all((_media_root / f.name).exists() for f in (image.file, image.thumbnail, image.display))


def test_missing_files_show_on_the_admin_product_page_and_in_readyz_for_staff(damaged, staff_client, client):
    broken = damaged["broken"]
    page = staff_client.get(f"/admin/catalog/product/{broken.product_id}/change/").content.decode()
    assert "missing from storage: original" in page
    fine = staff_client.get(f"/admin/catalog/product/{damaged['kept'].product_id}/change/").content.decode()
    assert "missing from storage" not in fine
    details = staff_client.get("/readyz").json()["checks"]["media"]
    assert details["missing_files"] == 1 and details["orphan_files"] == 3
    assert details["missing"][0]["image_id"] == broken.pk and details["missing"][0]["field"] == "original"
    assert "media" not in client.get("/readyz").json()
