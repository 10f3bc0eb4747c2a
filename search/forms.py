from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from catalog.models import Category
from search.colours import COLOURS, colour_label
from search.vectorstores import Filters

SORTS = [("relevance", "Best match"), ("price", "Price: low to high"), ("-price", "Price: high to low"),
         ("newest", "Newest")]  # fmt: skip
MAX_QUERY_LENGTH = 200


class FilterFields(forms.Form):
    category = forms.ModelChoiceField(queryset=Category.objects.order_by("path"), required=False,
                                      to_field_name="slug", empty_label="All categories")  # fmt: skip
    price_min = forms.DecimalField(min_value=0, max_digits=12, decimal_places=2, required=False, label="Min price")
    price_max = forms.DecimalField(min_value=0, max_digits=12, decimal_places=2, required=False, label="Max price")
    in_stock = forms.BooleanField(required=False, label="In stock only")
    color = forms.ChoiceField(choices=[("", "Any colour"), *((c, colour_label(c)) for c in COLOURS)], required=False,
                              label="Colour")  # fmt: skip

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        low, high = data.get("price_min"), data.get("price_max")
        if low is not None and high is not None and low > high:
            raise forms.ValidationError("The minimum price is above the maximum price.")
        return data

    def filters(self) -> Filters:
        data = self.cleaned_data
        category = data.get("category")
        return Filters(category_path=category.path if category else None, price_min=data.get("price_min"),
                       price_max=data.get("price_max"), in_stock=bool(data.get("in_stock")),
                       colour=data.get("color") or None)  # fmt: skip


class SearchForm(FilterFields):
    q = forms.CharField(
        max_length=MAX_QUERY_LENGTH, required=False, label="Search",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "e.g. a red summer dress"}),
    )  # fmt: skip
    sort = forms.ChoiceField(choices=SORTS, required=False)


class PhotoSearchForm(FilterFields):
    image = forms.FileField(label="Photo", widget=forms.ClearableFileInput(attrs={"accept": "image/*"}))


def sort_products(products: list[Any], sort: str) -> list[Any]:
    if sort == "price":
        return sorted(products, key=lambda p: (p.price is None, p.price or Decimal(0)))
    if sort == "-price":
        return sorted(products, key=lambda p: (p.price is None, -(p.price or Decimal(0))))
    if sort == "newest":
        return sorted(products, key=lambda p: p.created_at, reverse=True)
    return products
