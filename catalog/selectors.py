"""Reads of the catalogue, shared by the storefront, the staff pages and the API."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Lower
from django.http import Http404

from catalog.models import Category, Product

ORDERINGS = {
    "newest": ("-created_at", "-id"),
    "price": ("price", "id"),
    "-price": ("-price", "id"),
    "title": ("title", "id"),
}


@dataclass
class CategoryNode:
    category: Category
    product_count: int  # published products in this category and below
    children: list[CategoryNode]


def category_tree() -> list[CategoryNode]:
    """The whole tree with subtree product counts, in two queries."""
    categories = list(Category.objects.order_by("path"))
    direct = {
        row["category_id"]: row["n"]
        for row in Product.objects.published()
        .filter(category__isnull=False)
        .values("category_id")
        .annotate(n=Count("id"))
        .order_by()
    }
    nodes = {c.pk: CategoryNode(category=c, product_count=direct.get(c.pk, 0), children=[]) for c in categories}
    roots = []
    for category in sorted(categories, key=lambda c: (c.depth, c.position, c.name)):
        node = nodes[category.pk]
        if category.parent_id and category.parent_id in nodes:
            nodes[category.parent_id].children.append(node)
        else:
            roots.append(node)
    for category in sorted(categories, key=lambda c: -c.depth):  # leaves first
        if category.parent_id in nodes:
            nodes[category.parent_id].product_count += nodes[category.pk].product_count
    return roots


def category_get(*, slug: str) -> Category:
    category = Category.objects.filter(slug=slug).first()
    if category is None:
        raise Http404("No such category")
    return category


def category_ancestors(*, category: Category) -> list[Category]:
    """Root-first ancestors of ``category`` (itself excluded), in one query."""
    parts = category.path.split("/")[:-1]
    paths = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return list(Category.objects.filter(path__in=paths).order_by("path")) if paths else []


def product_list(
    *, category: Category | None = None, in_stock: bool = False, ordering: str = "newest", color: str = ""
) -> QuerySet[Product]:
    """Published products, optionally in a category subtree and of one colour (their ``color`` field), ready
    for product cards."""
    products = Product.objects.published().for_listing()
    if category is not None:
        products = products.in_category(category)
    if in_stock:
        products = products.in_stock()
    if color:
        products = products.filter(color__iexact=color)
    return products.order_by(*ORDERINGS.get(ordering, ORDERINGS["newest"]))


def product_colour_counts(*, category: Category | None = None, in_stock: bool = False) -> list[tuple[str, int]]:
    """How many listed products have each value of the ``color`` field, most common first (the colour facet)."""
    products = product_list(category=category, in_stock=in_stock).exclude(color="")
    rows = products.annotate(name=Lower("color")).values("name").annotate(n=Count("id")).order_by("-n", "name")
    return [(row["name"], row["n"]) for row in rows]


def product_detail(*, slug: str) -> Product:
    """A published product with its category and images, or 404."""
    product = (
        Product.objects.published().select_related("category").prefetch_related("images").filter(slug=slug).first()
    )
    if product is None:
        raise Http404("No such product")
    return product


@dataclass(frozen=True)
class PublishedProduct:
    product: Product  # its category is not loaded: ``category_path`` says where it sits
    category_path: str | None


def product_published(*, pk: int) -> PublishedProduct | None:
    """A published product by id with its category's path; None when there is none.

    For the JSON API, where this lookup sits on every similar-products request: one plain statement, less than half
    the time of the ORM's ``select_related`` query (which is mostly composing the SQL).
    """
    table, categories = Product._meta.db_table, Category._meta.db_table
    rows = Product.objects.raw(
        f"SELECT p.*, c.path AS category_path FROM {table} p LEFT JOIN {categories} c ON c.id = p.category_id "
        "WHERE p.id = %s AND p.is_active",
        [int(pk)],
    )
    product = next(iter(rows), None)
    return None if product is None else PublishedProduct(product, getattr(product, "category_path", None))


def product_search_staff(*, query: str) -> QuerySet[Product]:
    """Products matching a staff query by title or SKU (for pickers)."""
    return Product.objects.filter(Q(title__icontains=query) | Q(sku__iexact=query)).order_by("title")
