"""Category and colour suggestions: the vote, the stored neighbours (real pgvector, real CNN vectors), the upload page
in Chromium with its one-click accept, import_images --suggest-categories, and evaluate --suggest."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from catalog import services as catalog_services
from catalog.models import Product, ProductImage
from search.assistants import suggest
from search.indexing import embedding
from search.querying.active import active_forget

DEMO = Path(__file__).resolve().parents[2] / "demo" / "images"
FRUIT = ["apple.png", "banana.png", "carrot.png", "cherries.png", "cantaloupe-melon.png", "bartlett-pear.png"]


def _instruments() -> list[Path]:
    return sorted((DEMO / "musical-instruments").glob("*.png"))[:6]


@pytest.fixture
def catalogue(use_spaces, settings):  # type: ignore[no-untyped-def]
    """Six fruits and six instruments with their categories, embedded in the CNN space (real model, real store).
    The vote asks 3 neighbours: with 10, every product of this tiny catalogue would vote."""
    use_spaces("pixels", "cnn")
    settings.VITRINE_SUGGEST = {**settings.VITRINE_SUGGEST, "K": 3}
    fruit = catalog_services.category_from_path(path="Fruit & Vegetables")
    music = catalog_services.category_from_path(path="Musical Instruments")
    for category, files in ((fruit, [DEMO / "fruit-vegetables" / name for name in FRUIT]), (music, _instruments())):
        for path in files:
            product = catalog_services.product_create(title=path.stem.replace("-", " ").title(), category=category)
            catalog_services.product_image_add(product=product, file=path.read_bytes())
    for image in ProductImage.objects.all():
        assert embedding.image_embed(image_id=image.pk, space="cnn") == "ok"
    active_forget()
    return fruit, music


def _wrong() -> list[str]:
    wrong = []
    for product in Product.objects.all():
        votes = suggest.category_suggest(product=product)
        assert votes and 0.0 < votes[0].confidence <= 1.0
        assert sum(v.confidence for v in votes) == pytest.approx(1.0)
        if votes[0].category_id != product.category_id:
            wrong.append(product.title)
    return wrong


def test_the_vote_weighs_closer_neighbours_more_and_ignores_products_without_a_category():
    votes = suggest.vote(image=[(1, 0.9), (2, 0.5), (2, 0.5), (None, 0.99)], text=[(1, 0.8)],
                         opts={"K": 10, "POWER": 4, "IMAGE_WEIGHT": 1, "TEXT_WEIGHT": 1})  # fmt: skip
    assert [v.category_id for v in votes] == [1, 2]
    expected = (0.9**4 + 0.8**4) / (0.9**4 + 0.8**4 + 2 * 0.5**4)
    assert votes[0].confidence == pytest.approx(expected)
    assert suggest.vote(image=[(None, 0.9)], text=[]) == []


@pytest.mark.django_db
def test_a_product_gets_its_look_alikes_category_itself_excluded(catalogue):
    fruit, _ = catalogue
    wrong = _wrong()
    for product in Product.objects.all():
        image, _ = suggest.neighbours(product_id=product.pk, k=3)
        assert len(image) == 3 and max(score for _, score in image) < 0.99  # its own picture (1.0) never votes
    # Pictures alone (no text space here), 3 neighbours among 11: better than chance, not perfect; the measured
    # figures on whole catalogues are evaluate --suggest's (docs/assistants.md).
    assert len(wrong) <= 4, wrong
    # A new, uncategorised fruit picture (not stored yet) asks with its vector computed in process.
    newcomer = catalog_services.product_create(title="Cherry")
    image = catalog_services.product_image_add(product=newcomer, file=(DEMO / "fruit-vegetables" / "cherry.png")
                                               .read_bytes())  # fmt: skip
    notes = suggest.suggestion_notes([image])[image.pk]
    category = next(n for n in notes if n.kind == "category")
    assert category.value == fruit.path and "Fruit & Vegetables" in category.text
    assert next(n for n in notes if n.kind == "colour").value == "red"


@pytest.mark.django_db(transaction=True)
def test_a_suggestion_is_shown_on_the_upload_page_and_accepted_in_one_click(catalogue, page, live_server, screenshot):
    fruit, _ = catalogue
    user = get_user_model().objects.create_user("staff", password="pw-staff-123", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    page.goto("/staff/upload/")
    page.set_input_files("input[type=file]", str(DEMO / "fruit-vegetables" / "cherry.png"))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_selector(".outcomes")
    note = page.locator("[data-note=category]")
    assert "suggested category: Fruit & Vegetables" in note.inner_text()
    screenshot(page, "upload-suggestion")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "upload-suggestion-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    product = Product.objects.get(title="Cherry")
    assert product.category_id is None
    note.get_by_role("button", name="Accept").click()
    page.wait_for_load_state()
    product.refresh_from_db()
    assert product.category_id == fruit.pk
    assert page.url.endswith("/staff/upload/")  # back where staff were


@pytest.mark.django_db
def test_import_suggest_categories_fills_blanks_above_the_threshold_and_lists_every_suggestion(catalogue, tmp_path):
    fruit, _ = catalogue
    (tmp_path / "cherry.png").write_bytes((DEMO / "fruit-vegetables" / "cherry.png").read_bytes())
    (tmp_path / "manifest.csv").write_text("image,title,category\ncherry.png,Cherry,\n")
    out = StringIO()
    call_command("import_images", str(tmp_path), manifest=tmp_path / "manifest.csv", suggest_categories=True,
                 suggest_threshold=0.5, stdout=out, stderr=StringIO(), no_progress=True)  # fmt: skip
    text = out.getvalue()
    assert "Category suggestions: 1, 1 applied" in text and "cherry.png: Fruit & Vegetables (" in text
    assert Product.objects.get(title="Cherry").category_id == fruit.pk
    # Never applied below the threshold; still listed.
    (tmp_path / "pear.png").write_bytes((DEMO / "fruit-vegetables" / "chili-peppers.png").read_bytes())
    (tmp_path / "manifest.csv").write_text("image,title,category\npear.png,Pear,\n")
    out = StringIO()
    call_command("import_images", str(tmp_path), manifest=tmp_path / "manifest.csv", suggest_categories=True,
                 suggest_threshold=1.01, stdout=out, stderr=StringIO(), no_progress=True)  # fmt: skip
    assert "Category suggestions: 1, 0 applied" in out.getvalue() and "not applied, below" in out.getvalue()
    assert Product.objects.get(title="Pear").category_id is None


@pytest.mark.django_db
def test_evaluate_suggest_prints_accuracy_and_coverage_and_writes_the_report(catalogue, tmp_path):
    out = StringIO()
    call_command("evaluate", suggest=True, as_json=True, stdout=out, stderr=StringIO())
    result = json.loads(out.getvalue())
    assert result["n"] == 12 and result["image_space"] == "cnn"
    # The evaluation's exact scan and the shop's store searches give the same suggestions.
    assert result["top1"] == pytest.approx(1 - len(_wrong()) / 12)
    assert result["top3"] >= result["top1"]
    assert result["curve"][0]["coverage"] == 1.0 and result["curve"][0]["accuracy"] == result["top1"]
    out = StringIO()
    call_command("evaluate", suggest=True, report=tmp_path, stdout=out, stderr=StringIO())
    assert "top-1 accuracy" in out.getvalue() and "confidence >=" in out.getvalue()
    html = (tmp_path / "suggestions.html").read_text()
    assert "Accuracy against coverage" in html and "<svg" in html


@pytest.mark.django_db
def test_the_product_admin_suggests_and_accepts_in_one_click(catalogue, staff_client):
    fruit, _ = catalogue
    newcomer = catalog_services.product_create(title="Cherry")
    image = catalog_services.product_image_add(product=newcomer, file=(DEMO / "fruit-vegetables" / "cherry.png")
                                               .read_bytes())  # fmt: skip
    assert embedding.image_embed(image_id=image.pk, space="cnn") == "ok"
    page = staff_client.get(f"/admin/catalog/product/{newcomer.pk}/change/").content.decode()
    assert 'data-suggestion="category">suggested category: Fruit &amp; Vegetables (' in page
    assert 'value="colour:red"' in page
    response = staff_client.post(f"/staff/suggestions/{newcomer.pk}/accept/",
                                 {"title": "ignored", "suggestion": f"category:{fruit.path}"})  # fmt: skip
    assert response.status_code == 302 and response["Location"].endswith(f"/{newcomer.pk}/change/")
    newcomer.refresh_from_db()
    assert newcomer.category_id == fruit.pk and newcomer.title == "Cherry"
    assert (
        staff_client.post(f"/staff/suggestions/{newcomer.pk}/accept/", {"suggestion": "colour:plaid"}).status_code
        == 400
    )
    assert (
        'data-suggestion="category"'
        not in staff_client.get(f"/admin/catalog/product/{newcomer.pk}/change/").content.decode()
    )
