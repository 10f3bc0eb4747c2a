"""Image validation and normalisation, shared by every way an image enters the shop.

Everything here works on bytes and PIL images; it knows nothing of models.
The one rule: an image is inspected (format, pixel count) from its header
*before* any pixel is decoded, so a decompression bomb is refused cheaply.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import re
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

# A truncated file is an error, never a half-grey picture.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Judged by content, never by name: a TIFF, SVG, PDF or HTML file called .jpg is refused.
ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF"}
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif"}
# libjpeg refuses a side longer than this ("broken data stream when writing image file"): such images are
# stored as PNG.
JPEG_MAX_SIDE = 65_500
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


class ImageRejected(ValueError):
    """The bytes are not an image the shop accepts. ``reason`` is shown to people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class InspectedImage:
    """A validated image: its original bytes, facts about it, and an RGB rendering."""

    data: bytes
    checksum: str
    format: str
    width: int  # after EXIF orientation
    height: int
    rgb: Image.Image = field(repr=False)
    decoded: Image.Image | None = field(default=None, repr=False)

    copies: StoredCopies | None = field(default=None, repr=False)  # set once encoded (stored_copies)

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


@dataclass
class StoredCopies:
    """The bytes the shop stores for an image: pixels only, re-encoded."""

    original: bytes
    extension: str  # of the original: "jpg" or "png"
    thumbnail: bytes
    display: bytes


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _megapixels(n: int) -> str:
    return f"{n / 1_000_000:.1f}"


def too_big(size: int, limit: int) -> ImageRejected:
    """The refusal of a file over the byte limit, in megabytes people read."""
    return ImageRejected(f"the file is {size / 1_048_576:.1f} MB; the limit is {limit / 1_048_576:.1f}".rstrip("0")
                         .rstrip(".") + " MB")  # fmt: skip


# The end of a scan's entropy-coded data: 0xFF followed by anything but a stuffed zero, a restart marker or fill.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def jpeg_scans(data: bytes, *, stop_after: int) -> int:
    """How many scans (SOS segments) a JPEG holds, counted up to ``stop_after + 1``. A progressive JPEG has about
    ten; each is a pass over every block when decoding, whatever its size on the wire, and a draft (scaled)
    decode still makes every pass. Walks the segment headers and skips scan data with a C-speed search."""
    count, i, n = 0, 2, len(data)
    while i + 4 <= n and count <= stop_after:
        if data[i] != 0xFF:
            return count  # not a marker where one must be: the decoder will judge the rest
        marker = data[i + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:  # end of image
            return count
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:
            count += 1
            found = _SCAN_END.search(data, end)
            if found is None:
                return count
            end = found.start()
        i = end
    return count


class _DecodeTimeout(Exception):
    pass


class _Deadline(io.BytesIO):
    """The bytes of an image, refusing to be read past a deadline. Pillow's decoders read their input in
    blocks, so a decode that overruns its budget stops at the next block instead of running to its end."""

    def __init__(self, data: bytes, deadline: float) -> None:
        super().__init__(data)
        self.deadline = deadline

    def read(self, size: int | None = -1) -> bytes:
        if time.monotonic() > self.deadline:
            raise _DecodeTimeout
        return super().read(size)


def _source(data: bytes, deadline: float | None) -> io.BytesIO:
    return io.BytesIO(data) if deadline is None else _Deadline(data, deadline)


def _oriented_size(image: Image.Image, width: int, height: int) -> tuple[int, int]:
    with contextlib.suppress(OSError, ValueError, SyntaxError, KeyError, TypeError):
        if image.getexif().get(0x0112) in {5, 6, 7, 8}:  # a quarter turn
            return height, width
    return width, height


def _shrink(image: Image.Image, *, short_side: int) -> Image.Image:
    """``image`` brought down to ``short_side`` pixels on its short side (never up), before any conversion,
    so that conversions work on the small copy; metadata (orientation, colour profile) is kept."""
    width, height = image.size
    scale = short_side / min(width, height)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def inspect(
    data: bytes,
    *,
    max_pixels: int,
    max_bytes: int | None = None,
    max_scans: int | None = None,
    decode_side: int | None = None,
    budget_s: float | None = None,
) -> InspectedImage:
    """Validate ``data`` as an image and decode it to normalised RGB.

    Raises :class:`ImageRejected` with a human reason for anything the shop
    should not store: not an image, an unsupported format, too many pixels,
    a JPEG of more than ``max_scans`` scans, a corrupt or truncated file, a
    decode that takes longer than ``budget_s`` seconds.

    ``decode_side`` (for queries, which are never stored): only that many pixels are needed on the short
    side, so a JPEG is decoded at a reduced DCT scale, any other image is shrunk before it is converted,
    the full-size decode is not kept (``decoded`` is None) and ``rgb`` is the small copy.
    """
    deadline = None if budget_s is None else time.monotonic() + budget_s
    if not data:
        raise ImageRejected("the file is empty")
    if max_bytes is not None and len(data) > max_bytes:
        raise too_big(len(data), max_bytes)
    try:
        return _inspect(data, max_pixels=max_pixels, max_scans=max_scans, decode_side=decode_side, deadline=deadline)
    except _DecodeTimeout:
        raise ImageRejected(f"the image took too long to decode (over {budget_s:g} s)") from None


def _inspect(
    data: bytes, *, max_pixels: int, max_scans: int | None, decode_side: int | None, deadline: float | None
) -> InspectedImage:
    try:
        with warnings.catch_warnings():
            # Opening reads only the header; our own cap below decides, with a clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            probe = Image.open(_source(data, deadline))
    except Image.DecompressionBombError:
        raise ImageRejected(
            f"the image has far more pixels than the limit of {_megapixels(max_pixels)} megapixels"
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected("not an image file (the content is not a recognised image format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected(f"unreadable image header ({exc})") from None
    # A phone's JPEG with a Multi-Picture segment opens as "MPO": its first picture is the photo (a JPEG).
    fmt = "JPEG" if probe.format == "MPO" else (probe.format or "")
    if fmt not in ALLOWED_FORMATS:
        raise ImageRejected(f"unsupported image format {fmt or 'unknown'}; use JPEG, PNG, WebP or GIF")
    width, height = probe.size
    if width <= 0 or height <= 0:
        raise ImageRejected("the image has no pixels")
    if width * height > max_pixels:
        raise ImageRejected(
            f"{width}×{height} is {_megapixels(width * height)} megapixels, over the limit of "
            f"{_megapixels(max_pixels)} megapixels"
        )
    if fmt == "JPEG" and max_scans is not None and jpeg_scans(data, stop_after=max_scans) > max_scans:
        raise ImageRejected(
            f"the JPEG has more than {max_scans} scans (a progressive JPEG normally has about ten), "
            "too costly to decode"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe.verify()  # checksums and structure, where the format has them
            image = Image.open(_source(data, deadline))
            if decode_side and fmt == "JPEG":
                scale = decode_side / min(width, height)
                if scale < 1:
                    image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            image.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"corrupt or truncated image ({exc})") from None
    except Image.DecompressionBombError:  # pragma: no cover - pixel cap is lower
        raise ImageRejected("the image is a decompression bomb") from None
    if decode_side:
        full = _oriented_size(image, width, height)
        rgb = to_rgb(_shrink(image, short_side=decode_side))
        return InspectedImage(data=data, checksum=sha256(data), format=fmt, width=full[0], height=full[1], rgb=rgb)
    rgb = to_rgb(image)
    return InspectedImage(data=data, checksum=sha256(data), format=fmt, width=rgb.width, height=rgb.height, rgb=rgb,
                          decoded=image)  # fmt: skip


def to_rgb(image: Image.Image) -> Image.Image:
    """An upright 8-bit RGB copy of ``image``, transparency flattened onto white.

    Handles EXIF orientation, palettes (with or without transparency), LA/RGBA,
    CMYK, 16-bit and 32-bit greyscale and float images.
    """
    # A broken EXIF block costs the orientation, not the image.
    with contextlib.suppress(OSError, ValueError, SyntaxError, KeyError, TypeError):
        image = ImageOps.exif_transpose(image)
    image = to_srgb(image)
    mode = image.mode
    if mode in {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}:
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        if mode == "F":
            top = max(float(array.max(initial=1.0)), 1.0)
        eight = np.clip(array * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(eight, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return image.copy()
    return image.convert("RGB")  # CMYK, L, 1, P, YCbCr, LAB, HSV


def to_srgb(image: Image.Image) -> Image.Image:
    """``image`` with its embedded colour profile applied (converted to sRGB), so that the profile can be
    dropped without changing how the pixels look. Without a profile, or with one littlecms cannot use, the
    pixels are taken as sRGB already, which is what browsers do too."""
    icc = image.info.get("icc_profile")
    if not icc:
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in {"LA", "PA", "La", "RGBa"}:
        image = image.convert("RGBA")
    if image.mode not in {"RGB", "RGBA", "CMYK", "L"}:
        return image  # 16-bit and float modes: littlecms has no transform for Pillow's layouts
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        output = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode=output)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image
    assert converted is not None
    converted.info.pop("icc_profile", None)
    return converted


def open_rgb(data: bytes, *, long_side: int = 0, short_side: int = 0) -> Image.Image:
    """Decode stored, already-validated bytes to normalised RGB (for embeddings).

    ``long_side``/``short_side``: the fewest pixels the caller needs on the image's longest/shortest side.
    JPEGs are then decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still gives them (PIL's draft
    mode): a 1000 px product shot that a model sees at 224 px decodes at 250 px, 16x fewer pixels.
    The DCT scaling averages the dropped detail away, so it is also a clean downsampling filter.
    """
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG" and (long_side or short_side):
        width, height = image.size
        # draft() keeps both requested dimensions; ask for the image's own shape, scaled to the need.
        scale = max(long_side / max(width, height, 1), short_side / max(min(width, height), 1))
        if scale < 1:
            image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    return to_rgb(image)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """``image``'s pixels in ``fmt`` and nothing else. Pillow writes some of ``image.info`` back out on its own
    (a JPEG or GIF comment, a PNG's ICC profile), so the copy saved has none; an encoder's refusal becomes the
    file's reason."""
    image.info = {}
    out = io.BytesIO()
    try:
        image.save(out, format=fmt, **options)
    except (OSError, ValueError) as exc:
        raise ImageRejected(f"the image cannot be stored as {fmt} ({exc})") from None
    return out.getvalue()


def reencode(image: Image.Image) -> tuple[bytes, str]:
    """The copy the shop stores: re-encoded from decoded pixels, so nothing but pixels survives
    (no metadata, no colour profile once applied, no trailing payloads, no polyglot tricks). Upright; PNG
    when there is transparency or a side too long for JPEG, else high-quality JPEG. Returns (bytes, extension)."""
    with contextlib.suppress(OSError, ValueError, SyntaxError, KeyError, TypeError):
        image = ImageOps.exif_transpose(image)
    has_alpha = image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        return _encode(to_srgb(image).convert("RGBA"), "PNG", optimize=True), "png"
    rgb = to_rgb(image)
    if max(rgb.size) > JPEG_MAX_SIDE:
        return _encode(rgb, "PNG", optimize=True), "png"
    return _encode(rgb, "JPEG", quality=95, optimize=True), "jpg"


def derivative_jpeg(rgb: Image.Image, *, max_side: int, quality: int = 85) -> bytes:
    """A JPEG no larger than ``max_side`` on its longest side (never upscaled)."""
    copy = rgb.copy()
    side = min(max_side, JPEG_MAX_SIDE)
    copy.thumbnail((side, side), Image.Resampling.LANCZOS)
    return _encode(copy, "JPEG", quality=quality, optimize=True, progressive=True)


def stored_copies(image: InspectedImage, *, thumbnail_side: int, display_side: int) -> StoredCopies:
    """Encode (once) what the shop stores of ``image``; raises :class:`ImageRejected` if it cannot be."""
    if image.copies is None:
        original, extension = reencode(image.decoded or image.rgb)
        image.copies = StoredCopies(
            original=original,
            extension=extension,
            thumbnail=derivative_jpeg(image.rgb, max_side=thumbnail_side),
            display=derivative_jpeg(image.rgb, max_side=display_side),
        )
    return image.copies
