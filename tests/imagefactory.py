"""Real image files for tests, made with Pillow: every format and mode the shop must handle."""

from __future__ import annotations

import io
import itertools
import struct
import zlib

from PIL import Image

_counter = itertools.count(1)


def image_bytes(
    fmt: str = "PNG",
    size: tuple[int, int] = (64, 48),
    color: tuple[int, ...] | int = (200, 30, 30),
    mode: str = "RGB",
    unique: bool = True,
    **save: object,
) -> bytes:
    """An image in ``fmt``; ``unique`` stamps a pixel so every call has a new checksum."""
    image = Image.new(mode, size, color)
    if unique:
        n = next(_counter)
        stamp: tuple[int, ...] | int
        if mode in {"L", "P", "1"}:
            stamp = n % 256
        elif mode.startswith("I"):
            stamp = n
        else:
            stamp = tuple((n >> (8 * i)) % 256 for i in range(len(mode)))
        image.putpixel((0, 0), stamp)
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


def truncated_jpeg() -> bytes:
    data = image_bytes("JPEG", size=(256, 256), color=(10, 120, 200), quality=95)
    return data[: len(data) // 2]


def huge_png_header(width: int = 10_000, height: int = 10_000) -> bytes:
    """A PNG whose header claims ``width``×``height`` (the pixels need never be decoded)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def real_100mp_png() -> bytes:
    """A genuine 10,000×10,000 PNG (1-bit, so it is cheap to make)."""
    out = io.BytesIO()
    Image.new("1", (10_000, 10_000), 1).save(out, format="PNG")
    return out.getvalue()
