"""Colour as shoppers say it: the dominant named colours of a product picture, and colour words in queries.

Pure functions (numpy and Pillow, no database, no model). Pictures are compared with a fixed palette in
CIELAB, where distances follow what people see (sRGB distances call a dark red and a brown "close" and a
light and a dark blue "far"). Every uploaded picture has had its transparency flattened onto white, so the
white that touches the picture's edges is background, not product: it is ignored. Black counts less, because
clipart and product shots are full of black outlines and shadows that nobody would call the product's colour.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np
from PIL import Image

# Bump when the palette or the rules below change: stored colours of an older version are recomputed.
PALETTE_VERSION = 1

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey")

# A few sRGB prototypes per name; a pixel takes the name of its nearest prototype in CIELAB (ΔE 1976).
# fmt: off
_PROTOTYPES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((255, 0, 0), (220, 20, 60), (200, 16, 16), (178, 34, 34), (139, 0, 0), (230, 60, 50)),
    "orange": ((255, 165, 0), (255, 140, 0), (245, 120, 30), (255, 127, 80), (230, 150, 60)),
    "yellow": ((255, 255, 0), (255, 215, 0), (250, 230, 90), (240, 220, 130), (255, 240, 160), (220, 200, 40)),
    "green": ((0, 128, 0), (34, 139, 34), (50, 205, 50), (144, 238, 144), (107, 142, 35), (0, 90, 30),
              (120, 200, 80), (60, 170, 120)),
    "blue": ((0, 0, 255), (30, 144, 255), (70, 130, 180), (20, 40, 140), (135, 206, 235), (0, 180, 230),
             (65, 105, 225), (100, 150, 210), (30, 60, 210), (45, 75, 225), (25, 45, 175)),
    "purple": ((128, 0, 128), (148, 0, 211), (186, 85, 211), (138, 43, 226), (75, 0, 130), (170, 130, 200)),
    "pink": ((255, 192, 203), (255, 105, 180), (255, 20, 147), (219, 112, 147), (250, 160, 170)),
    "brown": ((139, 69, 19), (160, 82, 45), (101, 67, 33), (222, 184, 135), (120, 90, 60), (80, 50, 30),
              (150, 110, 70)),
}
# fmt: on
# Colours too faint to name a hue (chroma below this) are black, grey or white by lightness alone.
ACHROMATIC_CHROMA = 9.0
BLACK_BELOW_L = 24.0  # also for dark colours of any hue: what shoppers call black
WHITE_ABOVE_L = 86.0

SIDE = 64  # pictures are judged at this size: colour needs no detail (a few ms per picture here)
BLACK_WEIGHT = 0.35
MIN_SHARE = 0.15  # a colour is named when it covers at least this share of the (weighted) product pixels
MAX_COLOURS = 3


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0..255, any shape ending in 3) to CIELAB under D65."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    matrix = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])  # fmt: skip
    xyz = linear @ matrix.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


_NAMES = np.array([name for name, protos in _PROTOTYPES.items() for _ in protos])
_LAB = srgb_to_lab(np.array([p for protos in _PROTOTYPES.values() for p in protos], dtype=np.float64))


def _names_of(lab: np.ndarray) -> np.ndarray:
    """Palette names for (n, 3) CIELAB colours: hues by the nearest prototype, the rest by lightness."""
    distances = (lab**2).sum(axis=1)[:, None] - 2 * lab @ _LAB.T + (_LAB**2).sum(axis=1)[None, :]
    names = _NAMES[np.argmin(distances, axis=1)]
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    lightness = lab[:, 0]
    grey = np.where(lightness < BLACK_BELOW_L, "black", np.where(lightness > WHITE_ABOVE_L, "white", "grey"))
    names = np.where(chroma < ACHROMATIC_CHROMA, grey, names)
    return np.where(lightness < BLACK_BELOW_L * 0.75, "black", names)


def pixel_names(rgb: np.ndarray) -> np.ndarray:
    """The palette name of each pixel of an (..., 3) sRGB array (each distinct colour is classified once)."""
    flat = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    packed = (flat[:, 0].astype(np.int32) << 16) | (flat[:, 1].astype(np.int32) << 8) | flat[:, 2]
    unique, inverse = np.unique(packed, return_inverse=True)
    colours = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=1)
    return _names_of(srgb_to_lab(colours))[inverse.reshape(-1)].reshape(np.shape(rgb)[:-1])


def background_mask(rgb: np.ndarray) -> np.ndarray:
    """Near-white pixels connected to the picture's edge: the white the upload was flattened onto."""
    lab = srgb_to_lab(rgb)
    whiteish = (lab[..., 0] > 93) & (np.hypot(lab[..., 1], lab[..., 2]) < 6)
    mask = np.zeros_like(whiteish)
    mask[0, :], mask[-1, :], mask[:, 0], mask[:, -1] = whiteish[0, :], whiteish[-1, :], whiteish[:, 0], whiteish[:, -1]
    while True:  # flood fill by repeated 4-neighbour dilation inside the near-white pixels
        grown = mask.copy()
        grown[1:, :] |= mask[:-1, :]
        grown[:-1, :] |= mask[1:, :]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        grown &= whiteish
        if (grown == mask).all():
            return mask
        mask = grown


def image_colours(image: Image.Image) -> list[tuple[str, float]]:
    """The picture's dominant colours as ``(name, share)``, largest first; at most three, each covering at
    least ``MIN_SHARE`` of the product's pixels (black outlines weigh less). Empty when nothing is left
    once the background is removed. A picture that is all white is a white product."""
    small = image.convert("RGB")
    small.thumbnail((SIDE, SIDE), Image.Resampling.NEAREST)  # no blended edge pixels (outline + white = grey)
    rgb = np.asarray(small, dtype=np.uint8)
    if rgb.size == 0:
        return []
    foreground = ~background_mask(rgb)
    if foreground.sum() < 0.01 * foreground.size:
        return [("white", 1.0)] if foreground.size else []
    names = pixel_names(rgb[foreground])
    weights = np.where(names == "black", BLACK_WEIGHT, 1.0)
    total = float(weights.sum())
    shares = {name: float(weights[names == name].sum()) / total for name in COLOURS}
    ranked = sorted(((n, s) for n, s in shares.items() if s >= MIN_SHARE), key=lambda item: (-item[1], item[0]))
    return [(name, round(share, 3)) for name, share in ranked[:MAX_COLOURS]]


# --- colour words in queries ---------------------------------------------------------------------------

# English, German, French and Spanish (the languages of the multilingual text space), with their inflections.
# Left out on purpose: French "rose" (English "rose" is a flower), "gold" (a material more often than a colour).
_WORDS: dict[str, str] = {}
for _name, _words in {
    "red": "red rot rote roter rotes roten rouge rouges rojo roja rojos rojas",
    "orange": "orange orangefarben orangefarbene orangefarbener orangefarbenes orangen naranja naranjas",
    "yellow": "yellow gelb gelbe gelber gelbes gelben jaune jaunes amarillo amarilla amarillos amarillas",
    "green": "green grün grüne grüner grünes grünen gruen gruene vert verte verts vertes verde verdes",
    "blue": "blue navy blau blaue blauer blaues blauen bleu bleue bleus bleues azul azules",
    "purple": "purple violet lila violett violette violetter violettes violetten violets violettes pourpre "
              "morado morada morados moradas violeta violetas púrpura",
    "pink": "pink rosa rosafarben rosafarbene rosé",
    "brown": "brown braun braune brauner braunes braunen marron marrons brun brune bruns brunes marrón marrones",
    "black": "black schwarz schwarze schwarzer schwarzes schwarzen noir noire noirs noires negro negra negros negras",
    "white": "white weiß weiße weißer weißes weißen weiss weisse weisser weisses weissen blanc blanche blancs "
             "blanches blanco blanca blancos blancas",
    "grey": "grey gray silver grau graue grauer graues grauen silber gris grise grises",
}.items():  # fmt: skip
    for _word in _words.split():
        _WORDS[unicodedata.normalize("NFC", _word)] = _name

_TOKEN = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*", re.UNICODE)


def query_colours(query: str) -> tuple[list[str], str]:
    """The colours a query names and the query without them: ``"rote Mütze"`` → ``(["red"], "Mütze")``.

    A query that is nothing but colour words keeps its text (a shopper typing "orange" may want the fruit).
    """
    text = unicodedata.normalize("NFC", query)
    found: list[str] = []
    kept: list[str] = []
    last = 0
    for match in _TOKEN.finditer(text):
        name = _WORDS.get(match.group(0).casefold())
        if name is None:
            continue
        if name not in found:
            found.append(name)
        kept.append(text[last : match.start()])
        last = match.end()
    if not found:
        return [], query
    rest = " ".join("".join([*kept, text[last:]]).split())
    return found, (rest if _TOKEN.search(rest) else query)


def colour_label(name: str) -> str:
    """How a colour is shown to shoppers."""
    return name.capitalize()


def colours_valid(names: Sequence[str]) -> list[str]:
    """Only known palette names, in palette order."""
    wanted = {n.strip().lower() for n in names}
    return [name for name in COLOURS if name in wanted]
