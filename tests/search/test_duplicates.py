"""Near-duplicates: found by the real worker after an upload, recorded once per pair under concurrent workers,
reviewed by staff (merge, not a duplicate, hide), and named on the upload page and by import_images."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from PIL import Image, ImageOps

from catalog import services as catalog_services
from catalog.models import Product, ProductImage
from search.assistants import duplicates
from search.indexing import embedding
from search.models import ImageEmbedding, PossibleDuplicate
from tests.factories import upload
from tests.search.workers import Worker, wait_for

DEMO = Path(__file__).resolve().parents[2] / "demo" / "images" / "fruit-vegetables"


def _picture(name: str) -> bytes:
    return (DEMO / name).read_bytes()


def _reupload(name: str, *, scale: float = 0.7, quality: int = 80, border: bool = False) -> bytes:
    """The same picture as a supplier would send it again: another size, JPEG, maybe a white border."""
    image = ImageOps.exif_transpose(Image.open(DEMO / name))
    flat = Image.new("RGB", image.size, (255, 255, 255))
    flat.paste(image, mask=image.getchannel("A") if image.mode == "RGBA" else None)
    flat = flat.resize((round(flat.width * scale), round(flat.height * scale)), Image.Resampling.LANCZOS)
    if border:
        flat = ImageOps.expand(flat, border=flat.width // 10, fill=(255, 255, 255))
    out = io.BytesIO()
    flat.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _product_with(title: str, data: bytes) -> tuple[Product, ProductImage]:
    product = catalog_services.product_create(title=title, price=3)
    return product, catalog_services.product_image_add(product=product, file=data)


@pytest.fixture
def worker(settings, _media_root) -> Iterator[Worker]:  # type: ignore[no-untyped-def]
    settings.VITRINE_ENABLED_SPACES = ["pixels", "cnn"]
    process = Worker(home=settings.VITRINE_HOME, media_root=_media_root, spaces="pixels,cnn", name="duplicates")
    yield process
    process.stop()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_worker_records_a_duplicate_after_an_upload_and_not_a_distinct_product(worker):
    apple, _ = _product_with("Apple", _picture("apple.png"))
    red_apple, _ = _product_with("Red Apple", _picture("red-apple.png"))  # same category, another product
    again, _ = _product_with("Apple (supplier B)", _reupload("apple.png"))
    wait_for(lambda: ImageEmbedding.objects.filter(status="ok").count() == 6, 90, "six vectors")
    # A space marks its vector ok before it looks for duplicates: wait until both spaces have looked.
    scored_by = lambda: [set(s) for s in PossibleDuplicate.objects.values_list("scores", flat=True)]  # noqa: E731
    wait_for(lambda: {"pixels", "cnn"} in scored_by(), 30, "a possible duplicate found in both spaces")
    pair = PossibleDuplicate.objects.get()  # both spaces found it, one row
    assert (pair.product_low_id, pair.product_high_id) == (apple.pk, again.pk)
    assert set(pair.scores) == {"pixels", "cnn"}
    assert pair.scores["cnn"] >= 0.9 and pair.status == "open"
    assert pair.score == max(pair.scores.values())
    assert not PossibleDuplicate.objects.filter(product_low=red_apple).exists()
    assert not PossibleDuplicate.objects.filter(product_high=red_apple).exists()


@pytest.mark.django_db(transaction=True)
def test_two_workers_recording_one_pair_at_once_keep_one_row_with_the_best_score_per_space():
    a, image_a = _product_with("A", _picture("apple.png"))
    b, image_b = _product_with("B", _picture("banana.png"))
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def record(image: ProductImage, other: ProductImage, space: str, score: float) -> None:
        try:
            barrier.wait()
            duplicates.duplicates_record(image_id=image.pk, product_id=image.product_id, space=space,
                                         matches=[duplicates.Match(other.pk, other.product_id, score)])  # fmt: skip
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=record, args=args) for args in [
        (image_a, image_b, "cnn", 0.93), (image_b, image_a, "cnn", 0.95),
        (image_a, image_b, "pixels", 0.991), (image_b, image_a, "pixels", 0.98)]]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    pair = PossibleDuplicate.objects.get()
    assert (pair.product_low_id, pair.product_high_id) == (a.pk, b.pk)
    assert pair.scores == {"cnn": 0.95, "pixels": 0.991}
    assert pair.score == 0.991 and pair.space == "pixels"


@pytest.mark.django_db
def test_not_a_duplicate_is_remembered_and_never_shown_again(staff_client):
    a, image_a = _product_with("Red map pin", _picture("apple.png"))
    b, image_b = _product_with("Blue map pin", _picture("banana.png"))
    record = lambda score: duplicates.duplicates_record(  # noqa: E731
        image_id=image_b.pk, product_id=b.pk, space="cnn", matches=[duplicates.Match(image_a.pk, a.pk, score)]
    )
    record(0.92)
    pair = PossibleDuplicate.objects.get()
    listing = staff_client.get(reverse("admin:search_possibleduplicate_changelist")).content.decode()
    assert "Red map pin" in listing and "Blue map pin" in listing and "cnn 0.920" in listing
    staff_client.post(reverse("admin:search_possibleduplicate_decide", args=[pair.pk]), {"decision": "not_duplicate"})
    record(0.97)  # found again, from the other side, by a later embedding
    pair.refresh_from_db()
    assert pair.status == "not_duplicate" and pair.reviewed_at is not None and pair.score == 0.97
    assert PossibleDuplicate.objects.count() == 1
    listing = staff_client.get(reverse("admin:search_possibleduplicate_changelist")).content.decode()
    assert "Blue map pin" not in listing


@pytest.mark.django_db(transaction=True)
def test_two_staff_merging_one_pair_at_once_each_keeping_the_other_leave_one_product_visible():
    """Without the pair's lock, A's merge moved B's pictures onto A and hid B, then B's merge moved them all
    back onto B and hid A: both products hidden, every picture on a hidden product."""
    a, image_a = _product_with("Apple", _picture("apple.png"))
    b, image_b = _product_with("Apple again", _reupload("apple.png"))
    duplicates.duplicates_record(image_id=image_b.pk, product_id=b.pk, space="cnn",
                                 matches=[duplicates.Match(image_a.pk, a.pk, 0.97)])  # fmt: skip
    pair = PossibleDuplicate.objects.get()
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def merge(keep: Product) -> None:
        try:
            barrier.wait()
            outcomes.append(duplicates.duplicate_merge(pair=pair, keep=keep))
        except duplicates.AlreadyMerged as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=merge, args=(keep,)) for keep in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(type(o).__name__ for o in outcomes) == ["AlreadyMerged", "int"], outcomes
    visible = list(Product.objects.filter(pk__in=[a.pk, b.pk], is_active=True))
    assert len(visible) == 1
    assert set(ProductImage.objects.values_list("product_id", flat=True)) == {visible[0].pk}


@pytest.mark.django_db
def test_merge_moves_the_pictures_onto_the_kept_product_and_hide_hides_one(staff_client):
    keep, image_keep = _product_with("Apple", _picture("apple.png"))
    other, image_other = _product_with("Apple again", _reupload("apple.png"))
    duplicates.duplicates_record(image_id=image_other.pk, product_id=other.pk, space="cnn",
                                 matches=[duplicates.Match(image_keep.pk, keep.pk, 0.97)])  # fmt: skip
    pair = PossibleDuplicate.objects.get()
    page = staff_client.get(reverse("admin:search_possibleduplicate_change", args=[pair.pk])).content.decode()
    assert "Merge pictures into this one" in page and "Apple again" in page
    staff_client.post(reverse("admin:search_possibleduplicate_decide", args=[pair.pk]),
                      {"decision": "merge", "product": str(keep.pk)})  # fmt: skip
    assert list(keep.images.order_by("position").values_list("pk", "is_primary")) == [
        (image_keep.pk, True), (image_other.pk, False)]  # fmt: skip
    other.refresh_from_db()
    assert not other.is_active and Product.objects.filter(pk=other.pk).exists()  # hidden, never deleted
    assert PossibleDuplicate.objects.get().status == "merged"

    third, image_third = _product_with("Banana", _picture("banana.png"))
    duplicates.duplicates_record(image_id=image_third.pk, product_id=third.pk, space="pixels",
                                 matches=[duplicates.Match(image_keep.pk, keep.pk, 0.99)])  # fmt: skip
    pair = PossibleDuplicate.objects.get(product_high=third)
    staff_client.post(reverse("admin:search_possibleduplicate_decide", args=[pair.pk]),
                      {"decision": "hide", "product": str(third.pk)})  # fmt: skip
    third.refresh_from_db()
    assert not third.is_active and PossibleDuplicate.objects.get(pk=pair.pk).status == "hidden"
    # A product not in the pair is refused, and changes nothing.
    response = staff_client.post(reverse("admin:search_possibleduplicate_decide", args=[pair.pk]),
                                 {"decision": "hide", "product": str(other.pk)})  # fmt: skip
    assert response.status_code == 302
    spaces = staff_client.get(reverse("admin:search_spacestate_changelist")).content.decode()
    assert "0 to review</a> / 1 reviewed" in spaces  # pixels: the hidden pair; cnn: the merged one


@pytest.mark.django_db
def test_upload_page_and_import_say_which_existing_product_a_file_looks_like(staff_client, use_spaces, tmp_path):
    use_spaces("pixels", "cnn")
    apple, _ = _product_with("Apple", _picture("apple.png"))
    _product_with("Banana", _picture("banana.png"))
    for space in ("pixels", "cnn"):
        for row in ProductImage.objects.all():
            assert embedding.image_embed(image_id=row.pk, space=space) == "ok"
    files = [upload("apple-from-supplier.jpg", _reupload("apple.png", border=True), "image/jpeg"),
             upload("red-apple.png", _picture("red-apple.png"))]  # fmt: skip
    response = staff_client.post(reverse("catalog:staff_upload"), {"mode": "per_image", "images": files})
    html = response.content.decode()
    assert response.status_code == 200
    row = html.split("apple-from-supplier.jpg", 1)[1].split("</tr>", 1)[0]
    assert "looks like existing product “Apple”" in row and apple.get_absolute_url() in row
    assert "looks like" not in html.split("red-apple.png", 1)[1].split("</tr>", 1)[0]
    assert PossibleDuplicate.objects.filter(product_low=apple).count() == 1

    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "apple-small.jpg").write_bytes(_reupload("apple.png", scale=0.5, quality=50))
    (folder / "carrot.png").write_bytes(_picture("carrot.png"))
    out = StringIO()
    call_command("import_images", str(folder), stdout=out, stderr=StringIO(), no_progress=True)
    text = out.getvalue()
    assert "Imported 2 file(s)" in text and "Look-alikes (" in text
    assert "apple-small.jpg: looks like existing product “Apple”" in text
    assert "carrot.png" not in text.split("Look-alikes", 1)[1]


@pytest.mark.django_db
def test_the_sweeps_batches_find_duplicates_the_upload_path_missed(use_spaces):
    from search.indexing import bulk

    use_spaces("pixels", "cnn")
    apple, image = _product_with("Apple", _picture("apple.png"))
    again, copy = _product_with("Apple again", _reupload("apple.png", border=True))
    _, other = _product_with("Banana", _picture("banana.png"))
    ids = [image.pk, copy.pk, other.pk]
    # The worker was down during the uploads: a sweep batch embeds them later, as images_embed_batch_task does.
    assert bulk.images_embed_bulk(space="cnn", image_ids=ids, missing_only=True).processed == 3
    assert duplicates.duplicates_after_bulk(image_ids=ids, space="cnn") == 2  # the pair, found from both sides
    pair = PossibleDuplicate.objects.get()
    assert (pair.product_low_id, pair.product_high_id) == (apple.pk, again.pk) and set(pair.scores) == {"cnn"}
    assert duplicates.duplicates_after_bulk(image_ids=ids, space="text") == 0  # not a duplicate space
