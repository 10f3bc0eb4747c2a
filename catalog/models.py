from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Prefetch, Q
from django.urls import reverse


def _default_currency() -> str:
    return str(settings.VITRINE_CURRENCY)


class Category(models.Model):
    """A node in the category tree. ``path`` (slugs joined by "/") makes subtree queries one LIKE."""

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=120, unique=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    path = models.CharField(max_length=1000, unique=True, editable=False)
    description = models.TextField(blank=True)
    position = models.PositiveIntegerField(default=0, help_text="Order among siblings.")

    class Meta:
        ordering = ["path"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        old_path = self.path
        self.path = f"{self.parent.path}/{self.slug}" if self.parent else self.slug
        super().save(*args, **kwargs)
        if old_path and old_path != self.path:
            # Moving or renaming a node moves its whole subtree.
            for child in Category.objects.filter(path__startswith=old_path + "/"):
                child.path = self.path + child.path[len(old_path) :]
                super(Category, child).save(update_fields=["path"])

    def get_absolute_url(self) -> str:
        return reverse("catalog:product_list") + f"?category={self.slug}"

    @property
    def depth(self) -> int:
        return self.path.count("/")

    def clean(self) -> None:
        node = self.parent
        while node is not None:
            if node.pk == self.pk and self.pk is not None:
                raise ValidationError({"parent": "A category cannot be inside itself."})
            node = node.parent


class ProductQuerySet(models.QuerySet["Product"]):
    def published(self) -> ProductQuerySet:
        return self.filter(is_active=True)

    def in_stock(self) -> ProductQuerySet:
        return self.filter(stock__gt=0)

    def in_category(self, category: Category) -> ProductQuerySet:
        """Products in ``category`` or anywhere below it."""
        return self.filter(Q(category__path=category.path) | Q(category__path__startswith=category.path + "/"))

    def with_primary_image(self) -> ProductQuerySet:
        return self.prefetch_related(
            Prefetch("images", queryset=ProductImage.objects.filter(is_primary=True), to_attr="_primary_images")
        )

    def for_listing(self) -> ProductQuerySet:
        """What a product card needs, in a fixed number of queries."""
        return self.select_related("category").with_primary_image()


class Product(models.Model):
    title = models.CharField(max_length=255)
    slug = models.SlugField(max_length=280, unique=True)
    description = models.TextField(blank=True)
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="products")
    price = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(Decimal("0"))], help_text="Empty means price on request.",
    )  # fmt: skip
    currency = models.CharField(max_length=3, default=_default_currency)
    sku = models.CharField("SKU", max_length=64, unique=True)
    stock = models.PositiveIntegerField(default=0)
    is_active = models.BooleanField("active", default=True, help_text="Inactive products are hidden from shoppers.")
    color = models.CharField("colour", max_length=40, blank=True)
    attributes = models.JSONField(default=dict, blank=True, help_text='Free attributes, e.g. {"size": "M"}.')
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProductQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["is_active", "-created_at"], name="product_active_newest"),
            models.Index(fields=["price"], name="product_price"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(price__gte=0) | Q(price__isnull=True), name="product_price_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("catalog:product_detail", kwargs={"slug": self.slug})

    @property
    def in_stock(self) -> bool:
        return self.stock > 0

    @property
    def primary_image(self) -> ProductImage | None:
        if hasattr(self, "_primary_images"):
            return self._primary_images[0] if self._primary_images else None
        return self.images.filter(is_primary=True).first()


def price_limits() -> tuple[Decimal, Decimal]:
    """(largest price, smallest step) that ``Product.price`` holds: numeric(max_digits, decimal_places)."""
    field = Product._meta.get_field("price")
    step = Decimal(1).scaleb(-field.decimal_places)  # type: ignore[union-attr]
    return Decimal(10) ** (field.max_digits - field.decimal_places) - step, step  # type: ignore[union-attr,operator]


def _image_path(prefix: str, checksum: str, suffix: str) -> str:
    # Names come from the content hash: stable, unguessable from the upload, never user-chosen.
    return f"{prefix}/{checksum[:2]}/{checksum}{suffix}"


class ProductImage(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(max_length=255, help_text="The upload, re-encoded from its pixels (PNG or JPEG).")
    thumbnail = models.FileField(max_length=255, blank=True)
    display = models.FileField(max_length=255, blank=True, help_text="Upright RGB rendering for product pages.")
    checksum = models.CharField("SHA-256", max_length=64, unique=True, editable=False,
                                help_text="Of the uploaded bytes: the same file is never imported twice.")  # fmt: skip
    format = models.CharField(max_length=10, editable=False, help_text="Format of the upload.")
    width = models.PositiveIntegerField(editable=False)
    height = models.PositiveIntegerField(editable=False)
    alt = models.CharField("alt text", max_length=255, blank=True)
    position = models.PositiveIntegerField(default=0)
    is_primary = models.BooleanField("primary", default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["product"], condition=Q(is_primary=True), name="one_primary_image_per_product"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product} #{self.position}"

    @property
    def alt_text(self) -> str:
        return self.alt or self.product.title

    @property
    def thumbnail_url(self) -> str:
        return (self.thumbnail or self.file).url

    @property
    def display_url(self) -> str:
        return (self.display or self.file).url

    @staticmethod
    def storage_names(checksum: str, extension: str) -> dict[str, str]:
        return {
            "file": _image_path("products/originals", checksum, f".{extension}"),
            "thumbnail": _image_path("products/thumbs", checksum, ".jpg"),
            "display": _image_path("products/display", checksum, ".jpg"),
        }
