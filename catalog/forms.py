from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.utils.html import format_html
from django.utils.safestring import SafeString

from catalog import imaging
from catalog.models import Category, Product, ProductImage
from catalog.services import DuplicateImage, ImageRejected, image_copies, image_inspect


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """Accepts many files; each is validated later, one by one, so one bad file loses nothing."""

    widget = MultipleFileInput

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/*", "multiple": True}))
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[UploadedFile]:
        files = data if isinstance(data, (list, tuple)) else ([data] if data else [])
        if not files and self.required:
            raise forms.ValidationError("Choose or drop at least one image.")
        return [super(MultipleImageField, self).clean(f, initial) for f in files]


FORMAT_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "GIF": "GIF", "BMP": "BMP", "TIFF": "TIFF"}


def accepted_formats() -> str:
    """The image formats uploads accept, in words: "JPEG, PNG, WebP or GIF" (from ``imaging.ALLOWED_FORMATS``)."""
    order = list(FORMAT_NAMES)
    formats = sorted(imaging.ALLOWED_FORMATS, key=lambda fmt: (order.index(fmt) if fmt in order else len(order), fmt))
    names = [FORMAT_NAMES.get(fmt, fmt) for fmt in formats]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


class StaffUploadForm(forms.Form):
    MODE_PER_IMAGE = "per_image"
    MODE_ONE_PRODUCT = "one_product"

    images = MultipleImageField(label="Images")
    mode = forms.ChoiceField(
        choices=[
            (MODE_PER_IMAGE, "One new product per image (titled from the file name)"),
            (MODE_ONE_PRODUCT, "All images to one product"),
        ],
        initial=MODE_PER_IMAGE,
        widget=forms.RadioSelect,
    )
    category = forms.ModelChoiceField(
        queryset=Category.objects.order_by("path"), required=False, help_text="For new products."
    )
    price = forms.DecimalField(
        max_digits=12,
        decimal_places=2,
        min_value=0,
        required=False,
        help_text="For new products; leave empty for “price on request”.",
    )
    stock = forms.IntegerField(min_value=0, initial=0, required=False, help_text="For new products.")
    product = forms.ModelChoiceField(
        queryset=Product.objects.order_by("title"),
        required=False,
        help_text="Add the images to this existing product…",
    )
    new_title = forms.CharField(max_length=255, required=False, label="…or create a product titled")

    def accepted(self) -> str:
        """What the upload takes, as the page says it: formats and limits per file."""
        megabytes = settings.VITRINE_MAX_UPLOAD_BYTES / 2**20
        megapixels = settings.VITRINE_MAX_IMAGE_PIXELS / 1_000_000
        return f"{accepted_formats()}; at most {megabytes:g} MB and {megapixels:g} megapixels per image"

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("mode") == self.MODE_ONE_PRODUCT and not data.get("product") and not data.get("new_title"):
            raise forms.ValidationError("Pick the product to add the images to, or give a title for a new one.")
        return data


class StoredFileWidget(forms.Widget):
    """Shows a stored file as a link; it cannot be changed in place."""

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> SafeString:
        if not value or not getattr(value, "url", None):
            return SafeString("—")
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">original ({})</a>',
            value.url,
            value.name.rsplit(".", 1)[-1].upper(),
        )


class ProductImageInlineForm(forms.ModelForm):
    """Admin inline: a new row uploads a file, validated like every other upload."""

    class Meta:
        model = ProductImage
        fields = ["file", "alt", "position"]

    # Not a model field here: the one-primary-per-product rule is enforced by the
    # service, which demotes the old primary, rather than by a validation error.
    make_primary = forms.BooleanField(required=False, label="primary")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["make_primary"].initial = self.instance.is_primary
        self.fields["file"].widget = forms.ClearableFileInput(attrs={"accept": "image/*"})
        self.fields["alt"].widget.attrs.update({"class": "vitrine-alt"})
        self.fields["position"].widget.attrs.update({"class": "vitrine-narrow"})
        if self.instance.pk:
            # Replacing the bytes of an existing image would orphan its checksum and vectors;
            # staff delete the row and upload a new one instead.
            self.fields["file"].disabled = True
            self.fields["file"].widget = StoredFileWidget()
            self.fields["file"].required = False
        self.inspected: imaging.InspectedImage | None = None

    def clean_file(self) -> Any:
        upload = self.cleaned_data.get("file")
        if self.instance.pk or not upload:
            return self.instance.file if self.instance.pk else upload
        try:
            self.inspected = image_inspect(upload)
            image_copies(self.inspected)  # what cannot be stored is this form's error, not a 500 at save time
        except ImageRejected as exc:
            raise forms.ValidationError(f"{getattr(upload, 'name', 'This file')}: {exc.reason}") from None
        duplicate = ProductImage.objects.select_related("product").filter(checksum=self.inspected.checksum).first()
        if duplicate:
            raise forms.ValidationError(f"{upload.name}: {DuplicateImage(duplicate)}")
        return upload
