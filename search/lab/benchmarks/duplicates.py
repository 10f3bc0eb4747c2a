"""``benchmark --duplicates``: how well near-duplicate detection tells a re-upload from a distinct product.

The test set is built from a catalogue's images (the demo's manifest): each sampled picture is transformed the
ways a re-upload differs from the original (resized, re-compressed, cropped, slightly rotated, mirrored,
brightened or darkened, given a white border) and each transformed copy is a query against the untouched
catalogue. Detection flags every catalogue picture whose cosine reaches the threshold: the source picture is the
one true duplicate, any other product's picture is a false alarm. The sampled pictures themselves, each left out
of the catalogue, are the "distinct" queries: a new product of the same category, which should flag nothing.

Vectors come from the space's embedder in this process, the catalogue's and the queries' alike, and cosines are
exact (the store's HNSW search returns the same neighbours at these distances).
"""

from __future__ import annotations

import csv
import io
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from catalog import imaging
from search import embedders

Transform = Callable[[Image.Image], Image.Image]


def _jpeg(quality: int) -> Transform:
    def apply(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    return apply


def _resize(factor: float) -> Transform:
    return lambda im: im.resize(
        (max(8, round(im.width * factor)), max(8, round(im.height * factor))), Image.Resampling.LANCZOS
    )


def _crop(fraction: float, *, centred: bool = True) -> Transform:
    """A tighter framing: ``fraction`` of the width and of the height cut away, half from each edge, or (not
    ``centred``) all of it from the top and left edges."""

    def apply(im: Image.Image) -> Image.Image:
        dx, dy = round(im.width * fraction), round(im.height * fraction)
        if centred:
            return im.crop((dx // 2, dy // 2, im.width - (dx - dx // 2), im.height - (dy - dy // 2)))
        return im.crop((dx, dy, im.width, im.height))

    return apply


def _rotate(degrees: float) -> Transform:
    return lambda im: im.rotate(degrees, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))


def _brightness(factor: float) -> Transform:
    return lambda im: ImageEnhance.Brightness(im).enhance(factor)


def _border(fraction: float) -> Transform:
    return lambda im: ImageOps.expand(im, border=round(max(im.size) * fraction), fill=(255, 255, 255))


TRANSFORMS: dict[str, Transform] = {
    "resize 50%": _resize(0.5),
    "resize 200%": _resize(2.0),
    "jpeg q40": _jpeg(40),
    "jpeg q95": _jpeg(95),
    "crop 5%": _crop(0.05),
    "crop 15%": _crop(0.15),
    "crop 10% off a corner": _crop(0.10, centred=False),
    "rotate 3°": _rotate(3),
    "rotate -5°": _rotate(-5),
    "brightness +15%": _brightness(1.15),
    "brightness -15%": _brightness(0.85),
    "white border 10%": _border(0.10),
    "resize 75% + jpeg q60": lambda im: _jpeg(60)(_resize(0.75)(im)),
    "mirror": ImageOps.mirror,
}
MIRROR = "mirror"
DISTINCT = "distinct product"


@dataclass
class Row:
    """One kind of query at one threshold: duplicates found, missed, and false alarms."""

    name: str
    queries: int
    found: int  # the source picture reached the threshold
    false_alarms: int  # other products' pictures that reached it

    @property
    def recall(self) -> float | None:
        return self.found / self.queries if self.queries and self.name != DISTINCT else None

    @property
    def precision(self) -> float:
        flagged = self.found + self.false_alarms
        return self.found / flagged if flagged else 1.0


@dataclass
class Scores:
    """Per query kind: the source's cosine, and the best cosine among other products' pictures."""

    source: dict[str, np.ndarray]
    others: dict[str, list[np.ndarray]]  # every other picture's cosine (for counting false alarms)


def catalogue_images(root: Path, manifest: Path | None) -> list[tuple[Path, str, str]]:
    """(file, title, category) of each picture of a manifest, or of a folder tree (category = first folder)."""
    if manifest is not None:
        with manifest.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
        return [(root / row["image"], row.get("title", ""), row.get("category", ""))
                for row in rows if row.get("image")]  # fmt: skip
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    return [(p, p.stem, p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "") for p in files]


def _embed(space: str, images: list[Image.Image], batch: int = 16) -> np.ndarray:
    embedder = embedders.load(space)
    out = []
    for start in range(0, len(images), batch):
        chunk = [embedder.preprocess(im.convert("RGB")) for im in images[start : start + batch]]
        out.append(np.asarray(embedder.encode_batch(chunk), dtype=np.float32))
    vectors = np.concatenate(out)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def measure(*, space: str, root: Path, manifest: Path | None, sample: int, seed: int = 7,
            log: Callable[[str], None] = print) -> Scores:  # fmt: skip
    """Embed the catalogue and the transformed copies of ``sample`` of its pictures (spread over categories)."""
    items = catalogue_images(root, manifest)
    # Decoded as the shop decodes a stored picture for its embedders (transparency on white).
    pictures = [imaging.to_rgb(Image.open(path)) for path, _, _ in items]
    log(f"{space}: embedding {len(pictures)} catalogue pictures")
    catalogue = _embed(space, pictures)
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(items)), min(sample, len(items))))
    source: dict[str, np.ndarray] = {}
    others: dict[str, list[np.ndarray]] = {}
    mask = np.ones(len(items), dtype=bool)
    for name, transform in TRANSFORMS.items():
        log(f"{space}: {name} × {len(chosen)}")
        queries = _embed(space, [transform(pictures[i]) for i in chosen])
        cosines = queries @ catalogue.T
        source[name] = np.array([cosines[q, i] for q, i in enumerate(chosen)])
        others[name] = []
        for q, i in enumerate(chosen):
            mask[:] = True
            mask[i] = False
            others[name].append(cosines[q, mask])
    # Distinct: each sampled picture as a new upload, its own original left out of the catalogue.
    cosines = catalogue[chosen] @ catalogue.T
    source[DISTINCT] = np.zeros(len(chosen))
    others[DISTINCT] = []
    for q, i in enumerate(chosen):
        mask[:] = True
        mask[i] = False
        others[DISTINCT].append(cosines[q, mask])
    return Scores(source=source, others=others)


def rows_at(scores: dict[str, Scores], thresholds: dict[str, float]) -> list[Row]:
    """Detection as the shop does it: a pair is flagged when any space's cosine reaches that space's threshold."""
    first = next(iter(scores.values()))
    rows = []
    for name in first.source:
        found = 0
        alarms = 0
        for q in range(len(first.source[name])):
            hit = False
            flagged = np.zeros(len(first.others[name][q]), dtype=bool)
            for space, t in thresholds.items():
                hit |= name != DISTINCT and bool(scores[space].source[name][q] >= t)
                flagged |= scores[space].others[name][q] >= t
            found += int(hit)
            alarms += int(flagged.sum())
        rows.append(Row(name=name, queries=len(first.source[name]), found=found, false_alarms=alarms))
    return rows


def overall(rows: list[Row], *, mirror: bool = False) -> Row:
    """All transforms together (mirroring only if asked) and the distinct products' false alarms."""
    kept = [r for r in rows if mirror or r.name != MIRROR]
    transforms = [r for r in kept if r.name != DISTINCT]
    return Row(name="all" + (" with mirror" if mirror else " but mirror"), queries=sum(r.queries for r in transforms),
               found=sum(r.found for r in kept), false_alarms=sum(r.false_alarms for r in kept))  # fmt: skip


SWEEP = {"cnn": np.round(np.arange(0.80, 0.991, 0.01), 3), "pixels": np.round(np.arange(0.95, 0.9991, 0.0025), 4)}


def choose_thresholds(scores: dict[str, Scores], *, precision_goal: float = 0.95) -> dict[str, float]:
    """The thresholds (one per space, every combination of the sweep) with the best recall over the non-mirror
    transforms at ``precision_goal``; ties go to the higher thresholds (fewer alarms on a bigger catalogue)."""
    grids = [[(space, float(t)) for t in SWEEP.get(space, np.round(np.arange(0.80, 0.991, 0.01), 3))]
             for space in scores]  # fmt: skip
    best: tuple[float, float, dict[str, float]] | None = None
    for combination in itertools.product(*grids):
        thresholds = dict(combination)
        row = overall(rows_at(scores, thresholds))
        if row.precision < precision_goal:
            continue
        key = (row.recall or 0.0, sum(thresholds.values()))
        if best is None or key > best[:2]:
            best = (key[0], key[1], thresholds)
    return best[2] if best else {space: 0.999 for space in scores}


def table(rows: list[Row]) -> list[str]:
    lines = [f"  {'query':26} {'n':>4} {'found':>6} {'false':>6} {'recall':>7} {'precision':>9}"]
    for r in rows:
        recall = "—" if r.recall is None else f"{r.recall:.3f}"
        lines.append(f"  {r.name:26} {r.queries:>4} {r.found:>6} {r.false_alarms:>6} {recall:>7} {r.precision:>9.3f}")
    return lines


def run(*, spaces: list[str], root: Path, manifest: Path | None, sample: int, thresholds: dict[str, float],
        log: Callable[[str], None], out: Callable[[str], None]) -> dict[str, dict]:  # fmt: skip
    """Measure the spaces; print the per-transformation table of each space alone and of them together, at the
    thresholds the sweep chooses and at the configured ones. Returns the figures (JSON-ready)."""
    scores: dict[str, Scores] = {}
    for space in spaces:
        try:
            scores[space] = measure(space=space, root=root, manifest=manifest, sample=sample, log=log)
        except embedders.SpaceUnavailable as exc:
            out(f"{space}: skipped, the model is unavailable: {exc.reason}")
    figures: dict[str, dict] = {}
    if not scores:
        return figures
    groups = [{space: scores[space]} for space in scores] + ([scores] if len(scores) > 1 else [])
    for group in groups:
        label = " + ".join(group)
        chosen = choose_thresholds(group)
        configured = {space: thresholds[space] for space in group if space in thresholds}
        figures[label] = {"chosen": chosen, "configured": configured}
        for what, ts in (("chosen", chosen), ("configured", configured)):
            if len(ts) != len(group) or (what == "configured" and ts == chosen):
                continue
            rows = rows_at(group, ts)
            rows += [overall(rows), overall(rows, mirror=True)]
            named = ", ".join(f"{space} >= {t:g}" for space, t in ts.items())
            sampled = len(next(iter(group.values())).source[DISTINCT])
            out(f"{label}, {what} thresholds ({named}); {sampled} pictures, catalogue of {len(items_of(group)) + 1}")
            out("\n".join(table(rows)))
            figures[label][f"{what}_rows"] = {
                r.name: {"n": r.queries, "found": r.found, "false_alarms": r.false_alarms, "recall": r.recall,
                         "precision": r.precision} for r in rows}  # fmt: skip
    for space, score in scores.items():
        mirror = score.source[MIRROR]
        rest = np.concatenate([v for k, v in score.source.items() if k not in (MIRROR, DISTINCT)])
        distinct = [o.max() for o in score.others[DISTINCT]]
        out(f"{space}: cosine of a mirrored copy to its source: median {np.median(mirror):.3f}, min {mirror.min():.3f};"
            f" of the other transformations: median {np.median(rest):.3f}, min {rest.min():.3f}; a distinct"
            f" product's nearest other picture: median {np.median(distinct):.3f}, max {max(distinct):.3f}")  # fmt: skip
    return figures


def items_of(group: dict[str, Scores]) -> list[np.ndarray]:
    return list(next(iter(group.values())).others[DISTINCT][0])
