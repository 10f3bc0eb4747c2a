"""``evaluate --tune hybrid``: weights chosen by cross-validation over categories, on a small real catalogue
embedded by the real pixel and text models, recorded, shown in the admin and used by hybrid from then on."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from search.indexing import bulk
from search.lab.tuning import GRID, category_folds
from search.models import RankingWeights
from search.querying import similar
from tests.factories import CategoryFactory, ProductFactory, add_image

pytestmark = pytest.mark.django_db

RED, BLUE, GREEN, YELLOW = (210, 40, 40), (40, 60, 210), (40, 170, 60), (230, 210, 40)
# Four categories whose colours and words each mislead somewhere: neither signal alone is right everywhere.
CATALOGUE = {
    "Mugs": [("Red enamel mug", RED), ("Blue coffee mug", BLUE), ("Stoneware mug", GREEN), ("Tea cup", RED)],
    "Shirts": [("Red cotton shirt", RED), ("Blue linen shirt", BLUE), ("Flannel shirt", GREEN), ("Polo top", BLUE)],
    "Lamps": [("Desk lamp", YELLOW), ("Red reading lamp", RED), ("Floor light", YELLOW), ("Bedside lamp", BLUE)],
    "Socks": [("Wool socks", GREEN), ("Cotton socks", YELLOW), ("Red ankle socks", RED), ("Sport socks", BLUE)],
}


@pytest.fixture
def tunable(use_spaces, settings) -> None:  # type: ignore[no-untyped-def]
    use_spaces("pixels", "text")
    settings.VITRINE_PRIMARY_IMAGE_SPACE = settings.VITRINE_FALLBACK_IMAGE_SPACE = "pixels"
    for name, items in CATALOGUE.items():
        category = CategoryFactory(name=name, slug=name.lower())
        for i, (title, colour) in enumerate(items):
            product = ProductFactory(category=category, title=title)
            add_image(product, color=tuple(min(255, c + 9 * i) for c in colour), size=(32, 32))
    bulk.images_embed_bulk(space="pixels")
    bulk.products_embed_bulk(space="text")


def _best(grid: list[float], values: list[float]) -> float:
    """The tuner's rule: the best value; among equals the most balanced weight, then the smaller."""
    return grid[max(range(len(grid)), key=lambda j: (round(values[j], 9), -abs(grid[j] - 0.5), -grid[j]))]


def test_folds_deal_categories_into_a_partition_the_same_way_every_time():
    names = [f"c{i}" for i in range(10)]
    folds = category_folds(names, 3)
    assert sorted(c for fold in folds for c in fold) == names and [len(f) for f in folds] == [4, 3, 3]
    assert category_folds(list(reversed(names)), 3) == folds  # seeded: order of input does not matter
    assert len(category_folds(names[:2], 5)) == 2  # never an empty fold


def test_tune_cross_validates_over_categories_records_and_is_used(tunable, staff_client):
    out = StringIO()
    call_command("evaluate", tune="hybrid", folds=2, k=2, as_json=True, stdout=out)
    data = json.loads(out.getvalue())
    grid, overall, folds, n = data["grid"], data["overall"], data["folds"], data["queries"]
    assert grid == list(GRID) and n == 16 and len(folds) == 2
    assert sorted(c for f in folds for c in f["categories"]) == sorted(CATALOGUE)
    assert sum(f["queries"] for f in folds) == n
    for fold in folds:
        # Tuned without the fold's categories: the best weight on the others (recomputed from what it reports) ...
        train = [(overall[j] * n - fold["held_out"][j] * fold["queries"]) / (n - fold["queries"])
                 for j in range(len(grid))]  # fmt: skip
        assert fold["text_weight"] == _best(grid, train)
        assert fold["train_precision"] == pytest.approx(max(train))
        # ... and measured on them.
        assert fold["test_precision"] == pytest.approx(fold["held_out"][grid.index(fold["text_weight"])])
    held_out = sum(f["test_precision"] * f["queries"] for f in folds) / n
    assert data["cv_precision"] == pytest.approx(held_out)
    # The grid's ends are each space alone, and agree with evaluate through each space's own search path.
    assert overall[0] == pytest.approx(data["single"]["pixels"])
    assert overall[-1] == pytest.approx(data["single"]["text"])
    assert data["text_weight"] == _best(grid, overall)

    row = RankingWeights.objects.get()
    assert (row.image_space, row.text_space, row.k, row.folds, row.queries) == ("pixels", "text", 2, 2, 16)
    assert row.text_weight == data["text_weight"] and row.image_weight == pytest.approx(1 - data["text_weight"])
    assert row.precision == pytest.approx(held_out)
    assert (row.best_single_space, row.best_single_precision) == max(data["single"].items(), key=lambda i: i[1])

    # Used by hybrid from the next search on, and said so by evaluate.
    ranking = similar.similar_ranking()
    assert ranking.space == "hybrid"
    out = StringIO()
    call_command("evaluate", space="hybrid", k=2, as_json=True, stdout=out)
    result = json.loads(out.getvalue())
    weights = f"pixels {row.image_weight:.2f} + text {row.text_weight:.2f} (tuned {row.tuned_at:%Y-%m-%d})"
    assert result["version"] == weights
    assert result["precision_at_k"] == pytest.approx(overall[grid.index(row.text_weight)])
    # The admin shows when, what and how well.
    html = staff_client.get("/admin/search/rankingweights/").content.decode()
    assert f"p@2 {row.precision:.3f}" in html and f"pixels {row.image_weight:.2f} + text" in html
    assert str(row.tuned_at.year) in html


def test_tune_prints_the_table_and_says_why_it_cannot_run(tunable, use_spaces):
    out = StringIO()
    call_command("evaluate", tune="hybrid", folds=2, k=2, stdout=out)
    text = out.getvalue()
    assert " 0.50 " in text and "fold 1 (" in text and "cross-validated hybrid p@2" in text
    assert "recorded as ranking weights #" in text
    use_spaces("pixels")  # no text space: nothing to blend
    with pytest.raises(CommandError, match="hybrid needs a text space"):
        call_command("evaluate", tune="hybrid", stdout=StringIO())
