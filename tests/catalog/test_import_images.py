from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.models import Category, Product, ProductImage
from tests.imagefactory import image_bytes, real_100mp_png, truncated_jpeg

pytestmark = pytest.mark.django_db


def run(*args, **kwargs) -> str:
    out = StringIO()
    call_command("import_images", *args, stdout=out, stderr=StringIO(), no_progress=True, **kwargs)
    return out.getvalue()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    (root / "shoes").mkdir(parents=True)
    (root / "bags" / "leather").mkdir(parents=True)
    (root / "shoes" / "red_running-shoe.png").write_bytes(image_bytes("PNG"))
    (root / "shoes" / "blue_boot.jpg").write_bytes(image_bytes("JPEG"))
    (root / "bags" / "leather" / "brown tote.webp").write_bytes(image_bytes("WEBP"))
    (root / "loose.png").write_bytes(image_bytes("PNG"))
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.png").write_bytes(image_bytes("PNG"))
    return root


def test_folder_tree_import(tree: Path):
    out = run(str(tree))
    assert "Imported 4 file(s), skipped 0, failed 0." in out
    titles = dict(Product.objects.values_list("title", "category__name"))
    assert titles == {"Red running shoe": "shoes", "Blue boot": "shoes", "Brown tote": "bags", "Loose": None}
    assert set(Category.objects.values_list("name", flat=True)) == {"shoes", "bags"}
    assert all(p.images.count() == 1 and p.primary_image for p in Product.objects.all())


def test_second_run_imports_nothing_new(tree: Path):
    run(str(tree))
    out = run(str(tree))
    assert "Imported 0 file(s), skipped 4, failed 0." in out
    assert "already in the catalogue" in out
    assert Product.objects.count() == 4 and ProductImage.objects.count() == 4


def test_bad_files_are_named_with_reasons_and_good_ones_kept(tree: Path):
    bad = tree / "shoes"
    (bad / "broken.jpg").write_bytes(truncated_jpeg())
    (bad / "notes.jpg").write_text("this is not a picture, just text\n" * 10)
    (bad / "huge.png").write_bytes(real_100mp_png())
    (bad / "readme.txt").write_text("hello")
    out = run(str(tree))  # exits normally: call_command would raise on CommandError
    assert "Imported 4 file(s), skipped 1, failed 3." in out
    assert "shoes/broken.jpg: corrupt or truncated image" in out
    assert "shoes/notes.jpg: not an image file" in out
    assert "shoes/huge.png: 10000×10000 is 100.0 megapixels, over the limit of 40.0 megapixels" in out
    assert "shoes/readme.txt: not an image file type (.txt)" in out
    assert Product.objects.count() == 4


def test_manifest_import_with_optional_columns_and_shared_sku(tmp_path: Path):
    root = tmp_path / "m"
    (root / "img").mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png"):
        (root / "img" / name).write_bytes(image_bytes())
    (root / "products.csv").write_text(
        "image,title,category,description,price,sku,color,stock\n"
        "img/a.png,Linen Shirt,Clothing/Shirts,Cool and light,29.90,SH-1,white,4\n"
        "img/b.png,Linen Shirt (back),Clothing/Shirts,,29.90,SH-1,white,4\n"
        "img/c.png,Kettle,Kitchen,,not-a-price,,,\n"
        "img/e.png,Toaster,Kitchen,,,,,²\n"
        "img/d.png,,,,,,,\n"
        "../outside.png,Escape,,,,,,\n"
        "img/missing.png,Ghost,,,,,,\n",
        encoding="utf-8",
    )
    out = run(str(root), manifest=root / "products.csv")
    assert "Imported 3 file(s), skipped 0, failed 4." in out
    assert "img/e.png: line 5: stock '²' is not a whole number" in out
    shirt = Product.objects.get(sku="SH-1")
    assert shirt.title == "Linen Shirt" and shirt.price == Decimal("29.90") and shirt.stock == 4
    assert shirt.color == "white" and shirt.description == "Cool and light"
    assert shirt.category.path == "clothing/shirts" and shirt.images.count() == 2
    assert "img/c.png: line 4: price 'not-a-price' is not a number" in out
    assert "../outside.png: line 7: the image path leaves the import folder" in out
    assert "img/missing.png: line 8: no such file" in out
    assert Product.objects.filter(title="D").exists()  # empty title falls back to the file name


def test_manifest_relative_to_path_and_missing_columns(tmp_path: Path):
    (tmp_path / "x.png").write_bytes(image_bytes())
    (tmp_path / "m.csv").write_text("image,title,category\nx.png,Thing,Misc\n")
    assert "Imported 1 file(s)" in run(str(tmp_path), manifest=Path("m.csv"))
    (tmp_path / "bad.csv").write_text("file,name\nx.png,Thing\n")
    with pytest.raises(CommandError, match="lacks the column"):
        run(str(tmp_path), manifest=tmp_path / "bad.csv")


def test_missing_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(CommandError, match="is not a folder"):
        run(str(tmp_path / "nope"))


def test_long_skip_lists_are_shortened_but_failures_never(tmp_path: Path):
    for i in range(25):
        (tmp_path / f"note-{i:02d}.txt").write_text("x")
    (tmp_path / "broken.jpg").write_bytes(truncated_jpeg())
    out = run(str(tmp_path))
    assert "skipped 25, failed 1." in out
    assert "note-19.txt" in out and "note-20.txt" not in out
    assert "… and 5 more (-v 2 lists them all)" in out
    assert "broken.jpg: corrupt or truncated image" in out
    assert "note-24.txt" in run(str(tmp_path), verbosity=2)


def test_every_bad_manifest_row_is_named_and_every_good_row_imported(tmp_path: Path):
    """Issue 14, item 6: the first row beyond a column's limit stopped the import with a traceback (exit 1)
    and the good rows after it were never imported."""
    root = tmp_path / "m"
    (root / "img").mkdir(parents=True)
    names = ["first", "sku", "colour", "huge", "nan", "eleven", "nul", "category", "deep", "last"]
    for name in names:
        (root / "img" / f"{name}.png").write_bytes(image_bytes())
    rows = [
        ("first", "First lamp", "Lamps", "", "10", "", ""),
        ("sku", "Long sku", "Lamps", "", "10", "S" * 80, ""),
        ("colour", "Long colour", "Lamps", "", "10", "", "c" * 41),
        ("huge", "Huge price", "Lamps", "", "1e30", "", ""),
        ("nan", "NaN price", "Lamps", "", "NaN", "", ""),
        ("eleven", "Eleven digits", "Lamps", "", "99999999999", "", ""),
        ("nul", "Nul\x00title", "Lamps", "", "10", "", ""),
        ("category", "Long category", "C" * 150, "", "10", "", ""),
        ("deep", "Deep category", "/".join(f"level {i}" for i in range(12)), "", "10", "", ""),
        ("last", "Last lamp", "Lamps", "", "9999999999.99", "", ""),
    ]
    lines = ["image,title,category,description,price,sku,color"]
    lines += [f"img/{image}.png,{title},{category},{description},{price},{sku},{color}"
              for image, title, category, description, price, sku, color in rows]  # fmt: skip
    (root / "products.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = run(str(root), manifest=root / "products.csv")  # call_command raises on a non-zero exit
    assert "Imported 2 file(s), skipped 0, failed 8." in out
    assert sorted(Product.objects.values_list("title", flat=True)) == ["First lamp", "Last lamp"]
    assert Product.objects.get(title="Last lamp").price == Decimal("9999999999.99")
    for expected in (
        "img/sku.png: line 3: sku is 80 characters, at most 64",
        "img/colour.png: line 4: color is 41 characters, at most 40",
        "img/huge.png: line 5: price '1e30' is more than 9999999999.99",
        "img/nan.png: line 6: price 'NaN' is not a valid price",
        "img/eleven.png: line 7: price '99999999999' is more than 9999999999.99",
        "img/nul.png: line 8: title contains a NUL character",
        "img/category.png: line 9: category level 'CCCCCCCCCCCCCCCCCCCC…' is 150 characters, at most 120",
        "img/deep.png: line 10: category has 12 levels, at most 8",
    ):
        assert expected in out, (expected, out)


def test_folder_import_refuses_links_that_leave_the_folder(tmp_path: Path):
    """Issue 14, item 11: folder mode followed symlinks out of the import folder (manifest mode did not)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.png").write_bytes(image_bytes())
    (outside / "album").mkdir()
    (outside / "album" / "holiday.png").write_bytes(image_bytes())
    root = tmp_path / "shop"
    (root / "lamps").mkdir(parents=True)
    (root / "lamps" / "desk lamp.png").write_bytes(image_bytes())
    (root / "lamps" / "private.png").symlink_to(outside / "private.png")
    (root / "lamps" / "passwd.png").symlink_to("/etc/passwd")
    (root / "lamps" / "same lamp.png").symlink_to(root / "lamps" / "desk lamp.png")  # inside: harmless
    (root / "album").symlink_to(outside / "album", target_is_directory=True)
    out = run(str(root))
    assert "Imported 1 file(s), skipped 1, failed 3." in out, out
    assert "lamps/private.png: a link to a file outside the import folder" in out
    assert "lamps/passwd.png: a link to a file outside the import folder" in out
    assert "album: a link to a folder outside the import folder" in out
    assert list(Product.objects.values_list("title", flat=True)) == ["Desk lamp"]
