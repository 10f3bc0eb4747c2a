"""``evaluate``: metric maths by hand, every space compared, text queries and the HTML report, on real Postgres."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from search.lab.metrics import (
    Neighbour,
    QueryOutcome,
    average_precision_at_k,
    mean_metrics,
    per_category,
    precision_at_k,
    ranked_relevance,
    recall_at_k,
    score_query,
)
from tests.factories import CategoryFactory, ProductFactory, add_image

# --- metric maths, by hand --------------------------------------------------------------------------


def test_fewer_results_than_k_count_the_missing_ones_as_misses():
    # 2 results for k=5, both relevant, 4 relevant in the catalogue.
    outcome = score_query(label="q", category="A", k=5, n_relevant=4,
                          neighbours=[Neighbour(1, None, 0.9, True), Neighbour(2, None, 0.7, True)])  # fmt: skip
    assert outcome.precision == pytest.approx(2 / 5)
    assert outcome.recall == pytest.approx(2 / 4)
    # AP@5 = (1/1 + 2/2) / min(5, 4)
    assert outcome.average_precision == pytest.approx(2 / 4)
    assert precision_at_k([True], 3) == pytest.approx(1 / 3)


def test_ap_divides_by_min_k_and_relevant():
    # Only 2 relevant exist and both are found at ranks 1 and 3: AP@5 = (1 + 2/3) / 2.
    assert average_precision_at_k([True, False, True, False, False], 5, n_relevant=2) == pytest.approx((1 + 2 / 3) / 2)
    # 10 relevant exist, k = 3, all three hits: AP@3 = 1, recall 0.3.
    assert average_precision_at_k([True, True, True], 3, n_relevant=10) == pytest.approx(1.0)
    assert recall_at_k([True, True, True], 3, n_relevant=10) == pytest.approx(0.3)
    assert average_precision_at_k([True], 3, n_relevant=0) == 0.0


def test_ties_count_against_the_model():
    # Results as the store returned them (ties ordered by id): 0.8 appears twice, relevant first.
    scored = [(0.9, True), (0.8, True), (0.8, False), (0.5, True)]
    assert ranked_relevance(scored) == [True, False, True, True]
    outcome = score_query(label="q", category="A", k=3, n_relevant=3,
                          neighbours=[Neighbour(i, None, s, r) for i, (s, r) in enumerate(scored)])  # fmt: skip
    assert outcome.precision == pytest.approx(2 / 3)
    # ranks 1 and 3 are hits: AP@3 = (1/1 + 2/3) / min(3, 3)
    assert outcome.average_precision == pytest.approx((1 + 2 / 3) / 3)
    # A model that gives everything the same score gets no credit from the order of ids.
    flat = score_query(label="q", category="A", k=2, n_relevant=2,
                       neighbours=[Neighbour(1, None, 0.5, True), Neighbour(2, None, 0.5, True),
                                   Neighbour(3, None, 0.5, False), Neighbour(4, None, 0.5, False)])  # fmt: skip
    assert flat.precision == 0.0 and flat.average_precision == 0.0


def _outcome(category: str, precision: float, ap: float) -> QueryOutcome:
    return QueryOutcome(label="q", category=category, product_id=None, image_id=None, n_relevant=1, neighbours=[],
                        precision=precision, recall=precision, average_precision=ap)  # fmt: skip


def test_per_category_averages_each_categorys_queries_and_overall_averages_queries():
    queries = [_outcome("A", 1.0, 1.0), _outcome("A", 0.5, 0.25), _outcome("B", 0.0, 0.0)]
    categories = per_category(queries)
    assert list(categories) == ["A", "B"]
    assert categories["A"].n_queries == 2 and categories["A"].precision_at_k == pytest.approx(0.75)
    assert categories["A"].map_at_k == pytest.approx(0.625)
    assert categories["B"].precision_at_k == 0.0
    overall = mean_metrics(queries)
    # Overall is the mean over queries (0.5), not over categories (0.375).
    assert overall.n_queries == 3 and overall.precision_at_k == pytest.approx(0.5)
    assert overall.map_at_k == pytest.approx(1.25 / 3)


# --- the command on a real catalogue ---------------------------------------------------------------


def _catalogue() -> None:
    """Two categories that both pixels and a real text model can tell apart."""
    shirts, mugs = CategoryFactory(name="Shirts"), CategoryFactory(name="Mugs")
    for i in range(3):
        add_image(ProductFactory(category=shirts, title=f"Cotton shirt no. {i}", description="A shirt to wear."),
                  color=(230 - 10 * i, 20 + 5 * i, 20), size=(64, 64))  # fmt: skip
        add_image(ProductFactory(category=mugs, title=f"Ceramic coffee mug no. {i}", description="A mug for tea."),
                  color=(20, 20 + 5 * i, 230 - 10 * i), size=(64, 64))  # fmt: skip


@pytest.fixture
def indexed(use_spaces, tiny_clip) -> None:  # type: ignore[no-untyped-def]
    use_spaces("pixels", "cnn", "simclr", "clip", "text", simclr={"CHECKPOINT": ""}, clip={"MODEL": str(tiny_clip)})
    _catalogue()
    for space in ("pixels", "cnn", "clip", "text"):
        call_command("reindex", space=space, sync=True, no_progress=True, stdout=StringIO(), stderr=StringIO())


@pytest.fixture
def queries_csv(tmp_path: Path) -> Path:
    path = tmp_path / "queries.csv"
    path.write_text("query,category\nshirt,Shirts\ncoffee mug,Mugs\nsofa,Furniture\n", encoding="utf-8")
    return path


@pytest.mark.django_db
def test_all_spaces_and_text_queries_in_one_json_object(indexed, queries_csv):
    out = StringIO()
    call_command("evaluate", space="all", k=2, queries=queries_csv, as_json=True, stdout=out)
    data = json.loads(out.getvalue())
    assert data["k"] == 2
    by_space = {r["space"]: r for r in data["results"]}
    assert list(by_space) == ["pixels", "cnn", "clip", "text", "hybrid"]  # hybrid: clip (primary) with text
    for result in by_space.values():
        assert {"space", "k", "n_queries", "precision_at_k", "recall_at_k", "map_at_k", "per_category"} <= set(result)
        assert result["n_queries"] == 6 and set(result["per_category"]) == {"Mugs", "Shirts"}
    # Red and blue squares: pixels get every neighbour right; titles do too.
    assert by_space["pixels"]["precision_at_k"] == pytest.approx(1.0)
    assert by_space["text"]["precision_at_k"] == pytest.approx(1.0)
    assert by_space["hybrid"]["precision_at_k"] == pytest.approx(1.0)
    assert by_space["hybrid"]["version"] == "clip 0.50 + text 0.50 (default weights, not tuned)"
    assert by_space["pixels"]["per_category"]["Mugs"]["recall_at_k"] == pytest.approx(1.0)
    (skipped,) = data["skipped"]
    assert skipped["space"] == "simclr" and "no SimCLR checkpoint" in skipped["reason"]
    text = {r["space"]: r for r in data["text_queries"]}
    assert set(text) == {"clip", "text"}
    assert text["text"]["n_queries"] == 2 and text["text"]["mode"] == "text-queries"
    assert text["text"]["precision_at_k"] == pytest.approx(1.0)
    assert any("Furniture" in reason for reason in text["text"]["skipped_queries"])


@pytest.mark.django_db
def test_one_space_keeps_its_json_shape_and_prints_per_category(indexed, queries_csv):
    out = StringIO()
    call_command("evaluate", space="text", k=2, queries=queries_csv, as_json=True, stdout=out)
    data = json.loads(out.getvalue())
    assert data["space"] == "text" and data["n_queries"] == 6 and data["text_queries"]["n_queries"] == 2
    table = StringIO()
    call_command("evaluate", space="cnn", k=2, stdout=table)
    assert "per category (cnn)" in table.getvalue() and "Shirts" in table.getvalue()
    every = StringIO()
    call_command("evaluate", space="all", k=2, stdout=every)
    lines = every.getvalue().splitlines()
    assert lines[0].split()[:2] == ["space", "queries"] and [line.split()[0] for line in lines[1:5]] == [
        "pixels", "cnn", "clip", "text"]  # fmt: skip
    assert any(line.startswith("simclr") and "skipped" in line for line in lines)
    assert "precision@2 per category:" in lines and any(line.split()[:1] == ["Mugs"] for line in lines)
    with pytest.raises(CommandError, match="does not take text queries"):
        call_command("evaluate", space="pixels", k=2, queries=queries_csv, stdout=StringIO())
    bad = queries_csv.with_name("bad.csv")
    bad.write_text("text,label\nshirt,Shirts\n", encoding="utf-8")
    with pytest.raises(CommandError, match="lacks the column"):
        call_command("evaluate", space="text", queries=bad, stdout=StringIO())


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.svgs = 0
        self.rects = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        self.svgs += tag == "svg"
        self.rects += tag == "rect"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.mark.django_db
def test_html_report_renders_with_charts_grids_and_its_own_images(indexed, queries_csv, tmp_path):
    report = tmp_path / "report"
    out = StringIO()
    call_command("evaluate", space="all", k=2, queries=queries_csv, report=report, stdout=out)
    assert f"report: {report / 'index.html'}" in out.getvalue()
    page = _Page()
    page.feed((report / "index.html").read_text(encoding="utf-8"))
    page.close()
    text = " ".join(page.text)
    # A bar chart per metric for the spaces, and per metric for the text queries; a bar per space in each.
    assert page.svgs == 6 and page.rects == 3 * 5 + 3 * 2  # four spaces and hybrid; two spaces take text
    for heading in ("precision@2", "recall@2", "mAP@2", "Per category", "worst queries", "Text queries"):
        assert heading in text
    assert "no SimCLR checkpoint" in text  # the skipped space, with its reason
    assert "cos " in text  # neighbours carry their cosine score
    # Every image is a relative file in the folder, so the report works offline and elsewhere.
    assert page.images
    for src in page.images:
        assert not src.startswith(("/", "http")) and (report / src).is_file(), src
    # 4 spaces × (one query per category + 2 worst) query tiles, each followed by its k neighbours at most.
    assert len(page.images) >= 4 * (2 + 2)


@pytest.mark.django_db
def test_text_search_figures_beside_the_spaces(use_spaces, queries_csv):
    """The shopper's search on positive, negative and colour queries, the multilingual table and calibration."""
    from catalog.models import Product

    use_spaces("pixels", "text")
    _catalogue()
    call_command("reindex", space="text", sync=True, no_progress=True, stdout=StringIO(), stderr=StringIO())
    Product.objects.filter(title__startswith="Cotton shirt").update(color="red")
    folder = queries_csv.parent
    (folder / "colour_queries.csv").write_text("query,colour,category\nred shirt,red,Shirts\n", encoding="utf-8")
    (folder / "negative_queries.csv").write_text("query\nzebra\ncar insurance\n", encoding="utf-8")
    (folder / "queries.de.csv").write_text("query,category\nHemd,Shirts\nKaffeebecher,Mugs\n", encoding="utf-8")
    out = StringIO()
    call_command("evaluate", space="all", k=2, queries=queries_csv, calibrate=True, stdout=out)
    printed = out.getvalue()
    assert "shopper text search, positive queries: precision@2 1.000 (2 queries)" in printed
    assert "negative queries: 1.000 answered with nothing or 'no close match' (2 queries)" in printed
    assert "colour queries: precision@2 1.000" in printed
    assert "multilingual (precision@2):" in printed and "   en     de  cross-lingual" in printed
    assert "calibration text:" in printed
    out = StringIO()
    call_command("evaluate", space="all", k=2, queries=queries_csv, as_json=True, stdout=out)
    figures = json.loads(out.getvalue())["text_search"]
    assert figures["negative"]["share_rejected"] == 1.0 and figures["colour"]["precision_at_k"] == 1.0
    assert [row["source"] for row in figures["multilingual"]] == ["text", "search"]
