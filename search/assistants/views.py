"""Staff's one-click accept of a suggestion (category or colour) on the upload page."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from catalog import services as catalog_services
from catalog.models import Category, Product
from search.colours import colours_valid


@staff_member_required
@require_POST
def suggestion_accept(request: HttpRequest, product_id: int) -> HttpResponse:
    """Set the product's category (by path) or colour to the suggested ``value``; back to ``next``."""
    if not request.user.has_perm("catalog.change_product"):
        raise PermissionDenied("Accepting a suggestion changes the product.")
    product = get_object_or_404(Product, pk=product_id)
    value = request.POST.get("value", "").strip()
    kind = request.POST.get("kind", "")
    if "suggestion" in request.POST:  # a button inside the product's admin form: "kind:value"
        kind, _, value = request.POST["suggestion"].partition(":")
    if kind == "category":
        category = Category.objects.filter(path=value).first()
        if category is None:
            return HttpResponseBadRequest("That category does not exist (any more).")
        catalog_services.products_update(product_ids=[product.pk], category=category)
        messages.success(request, f"“{product.title}” is now in {category.name}.")
    elif kind == "colour":
        if not colours_valid([value]):
            return HttpResponseBadRequest("That is not a colour of the palette.")
        catalog_services.products_update(product_ids=[product.pk], color=value)
        messages.success(request, f"“{product.title}” is now {value}.")
    else:
        return HttpResponseBadRequest("Nothing to accept: kind must be category or colour.")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("admin:catalog_product_change", args=[product.pk])
    return HttpResponseRedirect(target)
