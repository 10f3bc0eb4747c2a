import io

import numpy as np
import pytest
from PIL import Image

from catalog import imaging
from catalog.imaging import ImageRejected
from tests.imagefactory import huge_png_header, image_bytes, real_100mp_png, truncated_jpeg

CAP = 40_000_000


def rgb_of(data: bytes) -> Image.Image:
    return imaging.inspect(data, max_pixels=CAP).rgb


def test_plain_rgb_jpeg_is_kept_with_facts():
    data = image_bytes("JPEG", size=(120, 80))
    result = imaging.inspect(data, max_pixels=CAP)
    assert (result.format, result.width, result.height) == ("JPEG", 120, 80)
    assert result.checksum == imaging.sha256(data)
    assert result.rgb.mode == "RGB" and result.extension == "jpg"


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (100, 40), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 40))  # blue band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90° clockwise turn
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif, quality=95)
    rgb = rgb_of(out.getvalue())
    assert rgb.size == (40, 100)
    top = np.asarray(rgb)[5, 20]
    assert top[2] > 200 and top[0] < 60  # the blue band is now on top


@pytest.mark.parametrize("mode, color", [("RGBA", (255, 0, 0, 0)), ("LA", (0, 0))])
def test_transparency_is_flattened_onto_white(mode, color):
    rgb = rgb_of(image_bytes("PNG", mode=mode, color=color, unique=False))
    assert rgb.mode == "RGB"
    assert rgb.getpixel((10, 10)) == (255, 255, 255)


def test_half_transparent_pixels_blend_with_white():
    rgb = rgb_of(image_bytes("PNG", mode="RGBA", color=(0, 0, 0, 128), unique=False))
    assert all(120 <= c <= 135 for c in rgb.getpixel((5, 5)))


def test_palette_with_transparency_is_flattened():
    image = Image.new("P", (32, 32), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    out = io.BytesIO()
    image.save(out, format="PNG", transparency=1)
    assert rgb_of(out.getvalue()).getpixel((3, 3)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb():
    rgb = rgb_of(image_bytes("JPEG", mode="CMYK", color=(0, 255, 255, 0), unique=False))
    r, g, b = rgb.getpixel((8, 8))
    assert rgb.mode == "RGB" and r > 200 and g < 60 and b < 60  # pure red in CMYK


def test_16_bit_greyscale_is_scaled_not_clipped():
    image = Image.fromarray(np.full((20, 20), 32768, dtype=np.uint16))
    out = io.BytesIO()
    image.save(out, format="PNG")
    assert Image.open(io.BytesIO(out.getvalue())).mode.startswith("I")
    r, g, b = rgb_of(out.getvalue()).getpixel((1, 1))
    assert r == g == b and 120 <= r <= 136  # mid-grey, not white


def test_truncated_jpeg_is_rejected():
    with pytest.raises(ImageRejected, match="corrupt or truncated"):
        imaging.inspect(truncated_jpeg(), max_pixels=CAP)


def test_text_is_not_an_image():
    with pytest.raises(ImageRejected, match="not an image"):
        imaging.inspect(b"hello, I am a text file\n" * 20, max_pixels=CAP)


def test_pixel_cap_refuses_before_decoding():
    # The header claims 100 megapixels; the pixel data is absent, so any decode would fail
    # with a different message. The cap must answer first.
    with pytest.raises(ImageRejected, match=r"100\.0 megapixels, over the limit of 40\.0"):
        imaging.inspect(huge_png_header(), max_pixels=CAP)


def test_real_100_megapixel_png_is_refused():
    with pytest.raises(ImageRejected, match="megapixels"):
        imaging.inspect(real_100mp_png(), max_pixels=CAP)


def test_a_phone_photo_with_an_mpf_segment_is_a_jpeg():
    """Phones write JPEGs with a Multi-Picture (MPF) segment, which Pillow opens as "MPO": the first picture is
    the photo, and shoppers and staff must not be told their camera's JPEG is an unsupported format."""
    out = io.BytesIO()
    first, depth_map = Image.new("RGB", (120, 80), (200, 30, 30)), Image.new("RGB", (120, 80), (30, 30, 200))
    first.save(out, format="MPO", save_all=True, append_images=[depth_map])
    assert Image.open(io.BytesIO(out.getvalue())).format == "MPO"
    result = imaging.inspect(out.getvalue(), max_pixels=CAP)
    assert (result.format, result.width, result.height, result.extension) == ("JPEG", 120, 80, "jpg")
    assert result.rgb.getpixel((60, 40))[0] > 150  # the first picture, not the second
    small = imaging.inspect(out.getvalue(), max_pixels=CAP, decode_side=20)
    assert small.format == "JPEG" and min(small.rgb.size) < 80  # decoded at a reduced DCT scale


def test_unsupported_format_is_named():
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="PPM")
    with pytest.raises(ImageRejected, match="unsupported image format PPM"):
        imaging.inspect(out.getvalue(), max_pixels=CAP)


def test_empty_and_oversized_files():
    with pytest.raises(ImageRejected, match="empty"):
        imaging.inspect(b"", max_pixels=CAP)
    with pytest.raises(ImageRejected, match="limit is"):
        imaging.inspect(image_bytes(), max_pixels=CAP, max_bytes=10)


def test_derivative_is_bounded_and_never_upscaled():
    rgb = Image.new("RGB", (1000, 500), (0, 128, 0))
    small = Image.open(io.BytesIO(imaging.derivative_jpeg(rgb, max_side=400)))
    assert small.format == "JPEG" and small.size == (400, 200)
    tiny = Image.open(io.BytesIO(imaging.derivative_jpeg(Image.new("RGB", (50, 30)), max_side=400)))
    assert tiny.size == (50, 30)


def test_jpegs_decode_at_the_smallest_scale_that_keeps_the_side_a_model_needs():
    data = image_bytes("JPEG", size=(1000, 670))
    assert imaging.open_rgb(data).size == (1000, 670)
    assert imaging.open_rgb(data, long_side=224).size == (250, 168)  # 1/4: the longest side keeps 224
    assert imaging.open_rgb(data, long_side=300).size == (500, 335)  # 1/4 would leave 250 < 300
    assert imaging.open_rgb(data, short_side=224).size == (500, 335)  # 1/4 would leave 168 < 224
    assert imaging.open_rgb(data, long_side=4000).size == (1000, 670)  # never upscaled
    assert imaging.open_rgb(data, long_side=100).size == (125, 84)  # 1/8 is the smallest DCT scale
    png = image_bytes("PNG", size=(1000, 670))
    assert imaging.open_rgb(png, long_side=224).size == (1000, 670)  # only JPEG has DCT scales
