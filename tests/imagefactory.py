"""Real image files for tests, made with Pillow: every format and mode the shop must handle."""

from __future__ import annotations

import io
import itertools
import struct
import zlib

import numpy as np
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


# --- hostile files: small on the wire, expensive to decode or carrying more than pixels ----------------


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment of a JPEG; a scan's segment runs to the end of its coded data."""
    found, i = [], 2
    while i < len(data):
        while data[i] == 0xFF:
            i += 1
        marker = data[i]
        i += 1
        if marker == 0xD9:
            found.append((marker, i - 2, i))
            break
        end = i + struct.unpack(">H", data[i : i + 2])[0]
        if marker == 0xDA:
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        found.append((marker, i - 2, end))
        i = end
    return found


def progressive_jpeg_many_scans(*, side: int = 4000, scans: int = 5000) -> bytes:
    """A progressive JPEG whose smallest scan (with its Huffman table) is repeated ``scans`` times: each
    copy is a few dozen bytes on the wire and a full pass over every block for the decoder."""
    pixels = (np.random.default_rng(7).random((side, side, 3)) * 40 + 100).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", progressive=True, quality=50)
    data = out.getvalue()
    segments = jpeg_segments(data)
    tiny = min((s for s in segments if s[0] == 0xDA), key=lambda s: s[2] - s[1])
    table = segments[segments.index(tiny) - 1]
    repeated = data[table[1] : table[2]] + data[tiny[1] : tiny[2]]
    eoi = segments[-1][1]
    return data[:eoi] + repeated * scans + data[eoi:]


def jpeg_with_app1_segments(*, count: int = 300) -> bytes:
    """A small JPEG after ``count`` full-size APP1 segments (about 64 KB each): megabytes of metadata."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 20, 160)).save(out, format="JPEG")
    data = out.getvalue()
    body = b"http://ns.adobe.com/xap/1.0/\x00" + b"<x:xmpmeta>" + b"a" * 65_000
    app1 = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    return data[:2] + app1 * count + data[2:]


def png_16bit(*, side: int = 6300, color_type: int = 2) -> bytes:
    """A ``side``×``side`` 16-bit PNG (RGB, or grey with ``color_type=0``) of one colour: tiny compressed."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    channels = {0: 1, 2: 3}[color_type]
    row = b"\x00" + b"\x40\x00" * channels * side
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def one_colour(fmt: str, *, side: int = 6300, mode: str = "RGBA") -> bytes:
    """A big image of one colour in ``fmt`` (PNG RGBA, GIF…): compresses to almost nothing."""
    out = io.BytesIO()
    Image.new(mode, (side, side), (30, 60, 90, 255) if mode == "RGBA" else 3).save(out, format=fmt)
    return out.getvalue()


SCRIPT = b"<html><script>alert(document.domain)</script></html>"


def icc_profile(*, swap_red_green: bool = False, description: bytes = b"Vitrine test profile") -> bytes:
    """A small ICC v2 RGB display profile (sRGB's D50 colorants, gamma 2.2). ``swap_red_green`` makes its red
    channel mean sRGB's green and the reverse, so converting from it visibly moves colours."""

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \x00\x00\x00\x00" + s15(x) + s15(y) + s15(z)

    red, green, blue = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)
    if swap_red_green:
        red, green = green, red
    curve = b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, 0x0233) + b"\x00\x00"  # gamma 2.2 (u8Fixed8)
    text = description + b"\x00"
    desc = b"desc\x00\x00\x00\x00" + struct.pack(">I", len(text)) + text + b"\x00" * 12 + b"\x00" * 67
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(*red)), (b"gXYZ", xyz(*green)),
            (b"bXYZ", xyz(*blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]  # fmt: skip
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        data += b"\x00" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + b"\x00" * 12
              + b"acsp" + b"\x00" * 24 + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249))  # fmt: skip
    header += b"\x00" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body


def with_metadata(fmt: str, *, mode: str = "RGB", color: tuple[int, ...] = (200, 40, 40)) -> bytes:
    """An image in ``fmt`` carrying every kind of metadata the format lets Pillow write, each with a script."""
    from PIL import PngImagePlugin

    image = Image.new(mode, (96, 64), color)
    image.putpixel((0, 0), tuple((next(_counter) >> (8 * i)) % 256 for i in range(len(mode))))
    exif = Image.Exif()
    exif[0x010E] = SCRIPT.decode()  # ImageDescription
    options: dict[str, object] = {"exif": exif.tobytes(), "icc_profile": icc_profile(description=SCRIPT)}
    if fmt == "JPEG":
        options.update(comment=SCRIPT, xmp=SCRIPT)
    elif fmt == "PNG":
        text = PngImagePlugin.PngInfo()
        text.add_text("Comment", SCRIPT.decode())
        text.add_text("Description", SCRIPT.decode(), zip=True)
        text.add_itxt("XML:com.adobe.xmp", SCRIPT.decode())
        options["pnginfo"] = text
    elif fmt == "GIF":
        image = image.convert("P")
        options = {"comment": SCRIPT}
    elif fmt == "WEBP":
        options["xmp"] = SCRIPT
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def long_png(*, width: int = 1, height: int = 70_000) -> bytes:
    """A valid PNG with a side longer than JPEG can hold (65,500 px): a few hundred bytes."""
    out = io.BytesIO()
    Image.new("L", (width, height), 128).save(out, format="PNG")
    return out.getvalue()
