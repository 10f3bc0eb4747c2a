"""Staff review of possible duplicates: the list (both products side by side, with their pictures, titles, prices
and score) and each pair's page with its three decisions: merge the pictures into one product, not a duplicate
(remembered), hide one of the two."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from catalog.models import Category, Product
from search.assistants import duplicates, suggest
from search.models import PossibleDuplicate


def _side(product: Product, image: Any) -> str:
    price = f"{product.price} {product.currency}" if product.price is not None else "price on request"
    state = "" if product.is_active else " (hidden)"
    if image is None:
        return format_html('<div class="vitrine-dup-side"><strong>{}</strong>{}<br>{}</div>', product.title, state,
                           price)  # fmt: skip
    return format_html('<div class="vitrine-dup-side"><img src="{}" alt="{}" class="vitrine-dup-thumb"><br>'
                       '<strong>{}</strong>{}<br>{}</div>', image.thumbnail_url, product.title, product.title, state,
                       price)  # fmt: skip


class OpenFirst(admin.SimpleListFilter):
    """To review by default: a reviewed pair is never shown again unless staff ask for it."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [*PossibleDuplicate.Status.choices, ("all", "all")]

    def choices(self, changelist: Any) -> Any:
        for value, label in self.lookup_choices:
            yield {"selected": (self.value() or "open") == value, "display": label,
                   "query_string": changelist.get_query_string({self.parameter_name: value})}  # fmt: skip

    def queryset(self, request: HttpRequest, queryset: QuerySet[PossibleDuplicate]) -> QuerySet[PossibleDuplicate]:
        value = self.value() or "open"
        return queryset if value == "all" else queryset.filter(status=value)


@admin.register(PossibleDuplicate)
class PossibleDuplicateAdmin(admin.ModelAdmin):
    list_display = ["pair", "first", "second", "similarity", "space", "status", "found_at"]
    list_display_links = ["pair"]
    list_filter = [OpenFirst, "space"]
    list_per_page = 50
    actions = ["not_duplicates"]

    class Media:
        css = {"all": ["css/admin.css"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[PossibleDuplicate]:
        return super().get_queryset(request).select_related("product_low", "product_high", "image_low", "image_high")

    @admin.display(description="pair")
    def pair(self, obj: PossibleDuplicate) -> str:
        return f"Review #{obj.pk}"

    @admin.display(description="first product")
    def first(self, obj: PossibleDuplicate) -> str:
        return _side(obj.product_low, obj.image_low)

    @admin.display(description="second product")
    def second(self, obj: PossibleDuplicate) -> str:
        return _side(obj.product_high, obj.image_high)

    @admin.display(description="similarity", ordering="score")
    def similarity(self, obj: PossibleDuplicate) -> str:
        return ", ".join(f"{space} {score:.3f}" for space, score in sorted(obj.scores.items()))

    @admin.action(description="Not duplicates (never shown again)", permissions=["change"])
    def not_duplicates(self, request: HttpRequest, queryset: QuerySet[PossibleDuplicate]) -> None:
        for pair in queryset:
            duplicates.duplicate_dismiss(pair=pair, user=request.user)
        self.message_user(request, f"{queryset.count()} pair(s) marked as not duplicates.", messages.SUCCESS)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [path("<int:pk>/decide/", view(self.decide_view), name="search_possibleduplicate_decide"),
                *super().get_urls()]  # fmt: skip

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:  # fmt: skip
        pair = self.get_object(request, unquote(object_id))
        if pair is None:
            raise Http404(f"No possible duplicate with id {object_id[:40]!r}")
        if not self.has_view_or_change_permission(request, pair):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Possible duplicate #{pair.pk}",
            "pair": pair,
            "sides": [(pair.product_low, pair.image_low), (pair.product_high, pair.image_high)],
            "can_decide": self.has_change_permission(request, pair),
        }
        return TemplateResponse(request, "admin/search/possible_duplicate.html", context)

    def decide_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        pair = PossibleDuplicate.objects.filter(pk=pk).select_related("product_low", "product_high").first()
        listing = reverse("admin:search_possibleduplicate_changelist")
        if pair is None:
            self.message_user(request, "That pair is gone (one of its products was deleted).", messages.WARNING)
            return HttpResponseRedirect(listing)
        if request.method != "POST" or not self.has_change_permission(request, pair):
            return HttpResponseRedirect(reverse("admin:search_possibleduplicate_change", args=[pk]))
        decision = request.POST.get("decision", "")
        chosen = {str(p.pk): p for p in (pair.product_low, pair.product_high)}.get(request.POST.get("product", ""))
        if decision == "not_duplicate":
            duplicates.duplicate_dismiss(pair=pair, user=request.user)
            self.message_user(request, "Marked as not a duplicate; this pair will not be shown again.")
        elif decision == "merge" and chosen is not None:
            try:
                moved = duplicates.duplicate_merge(pair=pair, keep=chosen, user=request.user)
            except duplicates.AlreadyMerged:
                self.message_user(request, "This pair was merged already (by someone else); nothing changed.",
                                  messages.WARNING)  # fmt: skip
                return HttpResponseRedirect(listing)
            self.message_user(request, f"{moved} picture(s) moved onto “{chosen.title}”; the other product is hidden.",
                              messages.SUCCESS)  # fmt: skip
        elif decision == "hide" and chosen is not None:
            duplicates.duplicate_hide(pair=pair, hide=chosen, user=request.user)
            self.message_user(request, f"“{chosen.title}” is hidden from shoppers.", messages.SUCCESS)
        else:
            self.message_user(request, "Choose a decision and one of the two products.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:search_possibleduplicate_change", args=[pk]))
        return HttpResponseRedirect(listing)


@admin.display(description="suggestions")
def suggestion_column(image: Any) -> str:
    """On a product's admin page, beside its primary picture: the suggested category (when it has none) and colour
    (when it has none), each with an Accept button. The image table sits inside the product's form, so each button
    posts that form to the accept view (``formaction``), as "Re-embed" does."""
    if not image.pk or not image.is_primary:
        return ""
    product = image.product
    choices: list[tuple[str, str, str]] = []
    if not product.category_id:
        votes = suggest.category_suggest(product=product)
        category = Category.objects.filter(pk=votes[0].category_id).first() if votes else None
        if category is not None:
            choices.append(("category", category.path, f"{category.name} ({votes[0].confidence:.0%})"))
    if not product.color:
        colour = suggest.colour_suggest(image=image)
        if colour:
            choices.append(("colour", colour, colour))
    if not choices:
        return ""
    url = reverse("search:suggestion_accept", args=[product.pk])
    return format_html_join("", '<p class="vitrine-suggestion" data-suggestion="{}">suggested {}: {} <button '
                            'type="submit" class="button" formaction="{}" formnovalidate name="suggestion" '
                            'value="{}:{}">Accept</button></p>',
                            ((kind, kind, label, url, kind, value) for kind, value, label in choices))  # fmt: skip
