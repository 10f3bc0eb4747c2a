from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Count, QuerySet
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html

from catalog import hooks, media, services
from catalog.forms import ProductImageInlineForm
from catalog.models import Category, Product, ProductImage


def _preview(image: ProductImage | None, size: int = 64) -> str:
    if image is None or not image.file:
        return "—"
    return format_html('<img src="{}" alt="" class="vt-thumb vt-thumb-{}">', image.thumbnail_url, size)


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["indented_name", "slug", "parent", "product_count", "position"]
    list_editable = ["position"]
    search_fields = ["name", "slug", "path"]
    prepopulated_fields = {"slug": ["name"]}
    autocomplete_fields = ["parent"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Category]:
        return super().get_queryset(request).select_related("parent").annotate(n_products=Count("products"))

    def save_model(self, request: HttpRequest, obj: Category, form: ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change:
            services.category_saved(category=obj, changed_fields=form.changed_data)

    def delete_model(self, request: HttpRequest, obj: Category) -> None:
        services.categories_delete(category_ids=[obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Category]) -> None:
        # Their products lose the category (SET NULL): whoever mirrors products must hear of it.
        services.categories_delete(category_ids=list(queryset.values_list("pk", flat=True)))

    @admin.display(description="name", ordering="path")
    def indented_name(self, obj: Category) -> str:
        return format_html("{}{}", "— " * obj.depth, obj.name)

    @admin.display(description="products", ordering="n_products")
    def product_count(self, obj: Category) -> int:
        return obj.n_products  # type: ignore[attr-defined]


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    form = ProductImageInlineForm
    extra = 1
    fields = ["preview", "file", "alt", "position", "make_primary", "stored"]
    readonly_fields = ["preview", "stored"]
    classes = ["vitrine-images"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        # Other apps' columns (search: each image's embedding state), registered in catalog.hooks.
        return [*super().get_fields(request, obj), *hooks.image_admin_columns()]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        return [*super().get_readonly_fields(request, obj), *hooks.image_admin_columns()]

    @admin.display(description="image")
    def preview(self, obj: ProductImage) -> str:
        if not obj.pk:
            return "—"
        return format_html('{}<br><small class="vitrine-muted">{}×{} {}</small>', _preview(obj, 72), obj.width,
                           obj.height, obj.format)  # fmt: skip

    @admin.display(description="files")
    def stored(self, obj: ProductImage) -> str:
        missing = media.images_missing_files(images=[obj]).get(obj.pk) if obj.pk else None
        if not missing:
            return "ok" if obj.pk else ""
        return format_html('<strong class="errornote">missing from storage: {}</strong>', ", ".join(missing))


class StockFilter(admin.SimpleListFilter):
    title = "stock"
    parameter_name = "stock"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("in", "In stock"), ("out", "Out of stock")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Product]) -> QuerySet[Product]:
        if self.value() == "in":
            return queryset.filter(stock__gt=0)
        if self.value() == "out":
            return queryset.filter(stock=0)
        return queryset


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["thumb", "title", "sku", "category", "price", "stock", "is_active", "updated_at"]
    list_display_links = ["thumb", "title"]
    list_editable = ["price", "stock", "is_active"]
    list_filter = ["is_active", StockFilter, "category", "created_at"]
    search_fields = ["title", "sku", "description", "color"]
    list_select_related = ["category"]
    prepopulated_fields = {"slug": ["title"]}
    autocomplete_fields = ["category"]
    readonly_fields = ["created_at", "updated_at", "view_on_site_link"]
    inlines = [ProductImageInline]
    actions = ["make_active", "make_inactive", "mark_out_of_stock", "delete_with_images"]  # search adds "reindex"
    fieldsets = [
        (None, {"fields": ["title", "slug", "sku", "category", "description"]}),
        ("Price and stock", {"fields": [("price", "currency"), "stock", "is_active"]}),
        ("Attributes", {"fields": ["color", "attributes"]}),
        ("History", {"fields": ["created_at", "updated_at", "view_on_site_link"], "classes": ["collapse"]}),
    ]

    class Media:
        css = {"all": ["css/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Product]:
        return super().get_queryset(request).with_primary_image()  # type: ignore[attr-defined]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:  # fmt: skip
        product = self.get_object(request, unquote(object_id)) if request.method == "GET" else None
        missing = media.images_missing_files(images=product.images.all()) if product is not None else {}
        if missing:
            self.message_user(request, f"{len(missing)} image(s) of this product have files missing from storage "
                              "(see “files” below; `manage.py media_check` lists every such image). Delete them "
                              "and upload the pictures again.", messages.ERROR)  # fmt: skip
        return super().change_view(request, object_id, form_url, extra_context)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # ours also removes the image files
        return actions

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "sku" and field is not None:
            # As on the upload page: a product without one gets a generated SKU when it is saved.
            field.required = False
            field.help_text = "Leave empty to have one generated (VT-…)."
        return field

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict[str, Any] | None = None) -> Any:  # fmt: skip
        response = super().changeform_view(request, object_id, form_url, extra_context)
        chosen = [str(f.name) for f in request.FILES.values() if hasattr(f, "name")] if request.method == "POST" else []
        if chosen and getattr(response, "status_code", None) == 200:
            # The form came back with errors: a browser cannot keep a chosen file, so say it plainly.
            self.message_user(
                request,
                f"Nothing was saved, so the image(s) you chose ({', '.join(chosen)}) are "
                "not kept: choose them again after correcting the errors below.",
                messages.WARNING,
            )
        return response

    @admin.display(description="")
    def thumb(self, obj: Product) -> str:
        return _preview(obj.primary_image, 48)

    @admin.display(description="on the shop")
    def view_on_site_link(self, obj: Product) -> str:
        return format_html('<a href="{}">{}</a>', obj.get_absolute_url(), obj.get_absolute_url()) if obj.pk else ""

    @admin.action(description="Publish selected products", permissions=["change"])
    def make_active(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        n = services.products_update(product_ids=list(queryset.values_list("pk", flat=True)), is_active=True)
        self.message_user(request, f"{n} product(s) published.", messages.SUCCESS)

    @admin.action(description="Hide selected products from the shop", permissions=["change"])
    def make_inactive(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        n = services.products_update(product_ids=list(queryset.values_list("pk", flat=True)), is_active=False)
        self.message_user(request, f"{n} product(s) hidden.", messages.SUCCESS)

    @admin.action(description="Mark selected products out of stock", permissions=["change"])
    def mark_out_of_stock(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        n = services.products_update(product_ids=list(queryset.values_list("pk", flat=True)), stock=0)
        self.message_user(request, f"{n} product(s) marked out of stock.", messages.SUCCESS)

    @admin.action(description="Delete selected products and their images", permissions=["delete"])
    def delete_with_images(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        products = list(queryset.prefetch_related("images"))
        for product in products:
            services.product_delete(product=product)
        self.message_user(request, f"{len(products)} product(s) deleted.", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: Product) -> None:
        services.product_delete(product=obj)

    def save_model(self, request: HttpRequest, obj: Product, form: ModelForm, change: bool) -> None:
        if not obj.sku:
            obj.sku = services.sku_new()
        super().save_model(request, obj, form, change)
        services.product_saved(product=obj, created=not change, changed_fields=form.changed_data)

    def save_formset(self, request: HttpRequest, form: ModelForm, formset: BaseInlineFormSet, change: bool) -> None:
        if formset.model is not ProductImage:
            super().save_formset(request, form, formset, change)
            return
        product = form.instance
        new_images = [getattr(f, "inspected", None) for f in formset.forms if not f.instance.pk]
        services.images_lock(checksums=[inspected.checksum for inspected in new_images if inspected is not None])
        for image_form in formset.forms:
            data = getattr(image_form, "cleaned_data", None)
            if not data:
                continue
            image: ProductImage = image_form.instance
            if data.get("DELETE") and image.pk:
                services.product_image_delete(image=image)
            elif not image.pk and getattr(image_form, "inspected", None) is not None:
                added = services.product_image_add(
                    product=product,
                    file=image_form.inspected,  # type: ignore[attr-defined]
                    alt=data.get("alt") or "",
                    primary=True if data.get("make_primary") else None,
                )
                if data.get("position"):
                    ProductImage.objects.filter(pk=added.pk).update(position=data["position"])
            elif image.pk and image_form.has_changed():
                image.save(update_fields=["alt", "position"])
                if data.get("make_primary") and not image.is_primary:
                    services.product_image_set_primary(image=image)
                elif not data.get("make_primary") and image.is_primary:
                    self.message_user(
                        request,
                        "A product always has a primary image: tick another image to make it primary instead.",
                        messages.WARNING,
                    )
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []


@admin.register(ProductImage)
class ProductImageAdmin(admin.ModelAdmin):
    list_display = ["thumb", "product_link", "is_primary", "position", "dimensions", "format", "created_at"]
    list_filter = ["is_primary", "format", "created_at"]
    search_fields = ["product__title", "product__sku", "checksum", "alt"]
    list_select_related = ["product"]
    readonly_fields = [
        "thumb_large",
        "product",
        "file",
        "checksum",
        "format",
        "width",
        "height",
        "is_primary",
        "created_at",
    ]
    fields = [
        "thumb_large",
        "product",
        "file",
        "alt",
        "position",
        "is_primary",
        "checksum",
        "format",
        "width",
        "height",
        "created_at",
    ]
    actions = ["make_primary", "delete_images"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # images are added on their product's page or the upload page

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="")
    def thumb(self, obj: ProductImage) -> str:
        return _preview(obj, 48)

    @admin.display(description="preview")
    def thumb_large(self, obj: ProductImage) -> str:
        return _preview(obj, 320)

    @admin.display(description="product", ordering="product__title")
    def product_link(self, obj: ProductImage) -> str:
        url = reverse("admin:catalog_product_change", args=[obj.product_id])
        return format_html('<a href="{}">{}</a>', url, obj.product.title)

    @admin.display(description="size")
    def dimensions(self, obj: ProductImage) -> str:
        return f"{obj.width}×{obj.height}"

    @admin.action(description="Make selected images their product's primary image", permissions=["change"])
    def make_primary(self, request: HttpRequest, queryset: QuerySet[ProductImage]) -> None:
        seen: set[int] = set()
        for image in queryset.order_by("position", "id"):
            if image.product_id not in seen:
                services.product_image_set_primary(image=image)
                seen.add(image.product_id)
        self.message_user(request, f"{len(seen)} product(s) got a new primary image.", messages.SUCCESS)

    @admin.action(description="Delete selected images and their files", permissions=["delete"])
    def delete_images(self, request: HttpRequest, queryset: QuerySet[ProductImage]) -> None:
        images = list(queryset)
        for image in images:
            services.product_image_delete(image=image)
        self.message_user(request, f"{len(images)} image(s) deleted.", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: ProductImage) -> None:
        services.product_image_delete(image=obj)
