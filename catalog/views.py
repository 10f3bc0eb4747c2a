from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from catalog import hooks, selectors, uploads
from catalog.forms import StaffUploadForm
from catalog.models import Product


def home(request: HttpRequest) -> HttpResponse:
    tree = selectors.category_tree()
    newest = list(selectors.product_list()[:8])
    return render(request, "catalog/home.html", {"category_tree": tree, "newest": newest})


def product_list(request: HttpRequest) -> HttpResponse:
    category = None
    if slug := request.GET.get("category"):
        category = selectors.category_get(slug=slug)
    ordering = request.GET.get("sort", "newest")
    if ordering not in selectors.ORDERINGS:
        ordering = "newest"
    in_stock = request.GET.get("in_stock") == "1"
    colours = selectors.product_colour_counts(category=category, in_stock=in_stock)
    color = request.GET.get("color", "").strip().lower()
    if color not in dict(colours):
        color = ""  # an unknown colour shows everything rather than an empty page
    products = selectors.product_list(category=category, in_stock=in_stock, ordering=ordering, color=color)
    page = Paginator(products, settings.VITRINE_PRODUCTS_PER_PAGE).get_page(request.GET.get("page"))
    ancestors = selectors.category_ancestors(category=category) if category else []
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "catalog/product_list.html",
        {
            "category": category,
            "ancestors": ancestors,
            "children": list(category.children.order_by("position", "name")) if category else [],
            "page": page,
            "ordering": ordering,
            "orderings": [
                ("newest", "Newest"),
                ("price", "Price: low to high"),
                ("-price", "Price: high to low"),
                ("title", "Name"),
            ],
            "in_stock": in_stock,
            "querystring": query.urlencode(),
            "colour_facet": colour_links(request, colours, color),
        },
    )


def colour_links(request: HttpRequest, colours: list[tuple[str, int]], active: str) -> list[dict[str, object]]:
    """The colour facet (``catalog/_colour_facet.html``): a link per colour that narrows the page to it (with how
    many it has), or, for the active one, lifts that filter. The rest of the query string is kept."""
    links = []
    for colour, count in colours:
        query = request.GET.copy()
        query.pop("page", None)
        if colour == active:
            query.pop("color", None)
        else:
            query["color"] = colour
        links.append({"colour": colour, "label": colour.capitalize(), "count": count, "active": colour == active,
                      "url": f"?{query.urlencode()}"})  # fmt: skip
    return links


def product_detail(request: HttpRequest, slug: str) -> HttpResponse:
    product = selectors.product_detail(slug=slug)
    images = list(product.images.all())
    primary = next((image for image in images if image.is_primary), images[0] if images else None)
    ancestors = selectors.category_ancestors(category=product.category) if product.category else []
    return render(
        request,
        "catalog/product_detail.html",
        {"product": product, "images": images, "primary": primary, "ancestors": ancestors,
         "panels": hooks.product_panels(request=request, product=product)},
    )  # fmt: skip


def _upload_permissions(data: dict) -> list[str]:
    """What this upload does to the catalogue, as the permissions it needs."""
    needed = ["catalog.add_productimage"]
    if data["mode"] == StaffUploadForm.MODE_PER_IMAGE or data["product"] is None:
        needed.append("catalog.add_product")
    else:
        needed.append("catalog.change_product")  # images added to a product change it
    return needed


@staff_member_required
def staff_upload(request: HttpRequest) -> HttpResponse:
    """Drag and drop many images: one product per image, or all onto one product."""
    if not request.user.has_perm("catalog.add_productimage"):
        raise PermissionDenied("Adding images needs the “Can add product image” permission.")
    form = StaffUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if not request.user.has_perms(_upload_permissions(data)):
            raise PermissionDenied("You may not create or change these products.")
        files = data["images"]
        target: Product | None = None
        if data["mode"] == StaffUploadForm.MODE_PER_IMAGE:
            outcomes = uploads.products_create_from_uploads(
                files=files, category=data["category"], price=data["price"], stock=data["stock"] or 0
            )
        else:
            target, outcomes = uploads.product_add_uploads(
                files=files, product=data["product"], title=data["new_title"], category=data["category"],
                price=data["price"], stock=data["stock"] or 0,
            )  # fmt: skip
        imported = [o for o in outcomes if o.status == "imported"]
        if imported:
            messages.success(request, f"{len(imported)} image(s) added.")
        if len(imported) < len(outcomes):
            messages.warning(request, f"{len(outcomes) - len(imported)} file(s) were not added; see below.")
        status = 200 if imported else 400
        # Other apps' notes on each new picture (search: "looks like existing product X", suggestions).
        notes = hooks.upload_notes(images=[o.image for o in imported if o.image is not None])
        rows = [(o, notes.get(o.image.pk, []) if o.image is not None else []) for o in outcomes]
        return render(
            request,
            "catalog/staff_upload.html",
            {"form": StaffUploadForm(), "outcomes": outcomes, "rows": rows, "target": target},
            status=status,
        )
    return render(request, "catalog/staff_upload.html", {"form": form}, status=400 if form.errors else 200)
