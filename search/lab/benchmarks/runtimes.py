"""Inference runtimes side by side (``benchmark --runtimes``): eager PyTorch, ONNX fp32 and int8, per space."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from django.conf import settings
from PIL import Image

from catalog.models import ProductImage
from search import embedders
from search.embedders import runtime
from search.indexing.bulk import encoded_batches
from search.indexing.sources import load_image_rgb

# Each backend is the space's embedder with these options (a private instance, side by side in one process).
BACKENDS: dict[str, dict[str, str]] = {
    "torch": {"RUNTIME": "torch"},
    "onnx": {"RUNTIME": "onnx", "QUANTIZE": "never"},
    "onnx-int8": {"RUNTIME": "onnx", "QUANTIZE": "always"},
}
QUERIES = ["red summer dress", "wooden chair", "chocolate cake with strawberries", "stainless steel hammer",
           "a laptop with a silver keyboard", "apple", "electric guitar", "children's bicycle with a bell"]  # fmt: skip


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"p50_ms": 1000 * float(np.percentile(ordered, 50)), "p95_ms": 1000 * float(np.percentile(ordered, 95)),
            "n": len(ordered)}  # fmt: skip


def _backend_embedders(space: str, backends: list[str]) -> dict[str, Any]:
    """Load each backend of ``space``; a backend that does not materialise (int8 refused, ONNX fallback) is
    reported with its reason instead of being measured under a wrong name."""
    loaded: dict[str, Any] = {}
    for name in backends:
        embedder = embedders.variant(space, **BACKENDS[name])
        if name == "onnx-int8" and not any(runner.backend == "onnx-int8" for runner in embedder.runners.values()):
            image = embedder.runners.get("image")
            loaded[name] = (image.details.get("int8_refused") if image else None) or "the space has no image tower"
        elif name != "torch" and any(runner.fallback_reason for runner in embedder.runners.values()):
            loaded[name] = embedder.runtime_label
        else:
            loaded[name] = embedder
    return loaded


def encode_prepared(embedder: Any, prepared: list[Any], size: int, pool: ThreadPoolExecutor | None = None) -> None:
    """Encode already-decoded images in batches of ``size``, ``embedder.streams`` batches at once, as the
    reindex runs them: the forward pass alone, for "decoding excluded" figures."""
    batches = [prepared[start : start + size] for start in range(0, len(prepared), size)]
    if pool is not None:
        for _ in pool.map(embedder.encode_batch, batches):
            pass
        return
    with ThreadPoolExecutor(max_workers=max(1, embedder.streams)) as own:
        for _ in own.map(embedder.encode_batch, batches):
            pass


def runtime_throughput(*, space: str, backends: list[str], rows: list[ProductImage], batch_size: int | None = None,
                       repeat: int = 3, decode_workers: int | None = None) -> dict[str, Any]:  # fmt: skip
    """img/s of each backend with decoding excluded (pre-decoded batches) and included (the reindex pipeline:
    decode threads overlapped with the forward pass, no DB writes), rounds interleaved, medians."""
    loaded = _backend_embedders(space, backends)
    live = {name: e for name, e in loaded.items() if not isinstance(e, str)}
    report: dict[str, Any] = {name: {"skipped": reason} for name, reason in loaded.items() if isinstance(reason, str)}
    if not live:
        return report
    first = next(iter(live.values()))
    size = batch_size or first.batch_size
    workers = decode_workers or settings.VITRINE_DECODE_THREADS
    started = time.perf_counter()
    prepared = [first.preprocess(load_image_rgb(row, first)) for row in rows]  # preprocessing is the same per backend
    decode_ms = 1000 * (time.perf_counter() - started) / len(rows)
    rates: dict[str, dict[str, list[float]]] = {name: {"excluded": [], "included": []} for name in live}
    for embedder in live.values():
        embedder.encode_batch(prepared[:size])  # warm-up: first-run allocations, lazy kernels
    for _ in range(repeat):
        for name, embedder in live.items():
            # As the reindex runs them: embedder.streams batches in flight at once.
            with ThreadPoolExecutor(max_workers=max(1, embedder.streams)) as pool:
                started = time.perf_counter()
                encode_prepared(embedder, prepared, size, pool)
                rates[name]["excluded"].append(len(prepared) / (time.perf_counter() - started))
                started = time.perf_counter()
                done = 0
                for _, encoded in encoded_batches(embedder, rows, size, workers):
                    done += len(encoded.result()) if encoded is not None else 0
                rates[name]["included"].append(done / (time.perf_counter() - started))
    torch_rate = float(np.median(rates["torch"]["excluded"])) if "torch" in rates else None
    for name, embedder in live.items():
        excluded, included = float(np.median(rates[name]["excluded"])), float(np.median(rates[name]["included"]))
        report[name] = {"version": embedder.version, "runtime": embedder.runtime_label, "batch_size": size,
                        "streams": embedder.streams, "threads_per_stream": runtime.stream_threads(),
                        "img_per_s_decode_excluded": excluded, "img_per_s_decode_included": included,
                        "rounds": rates[name],
                        "speedup_vs_torch": excluded / torch_rate if torch_rate else None}  # fmt: skip
    report["images"] = len(rows)
    report["decode_preprocess_ms_per_img_one_thread"] = decode_ms
    report["decode_threads"] = workers
    return report


def query_latency(*, space: str, backends: list[str], photo: Image.Image, trials: int = 50) -> dict[str, Any]:
    """Per backend: p50/p95 of one text query's embedding (tokenize + forward) and of one photo query's
    (resize, normalise, forward), as search requests compute them; backends interleaved per trial."""
    loaded = _backend_embedders(space, backends)
    live = {name: e for name, e in loaded.items() if not isinstance(e, str)}
    report: dict[str, Any] = {name: {"skipped": reason} for name, reason in loaded.items() if isinstance(reason, str)}
    kinds = [kind for kind in (embedders.TEXT, embedders.IMAGE) if kind in embedders.modalities(space)]
    times: dict[str, dict[str, list[float]]] = {name: {kind: [] for kind in kinds} for name in live}
    for trial in range(trials + 3):
        for name, embedder in live.items():
            for kind in kinds:
                started = time.perf_counter()
                if kind == embedders.TEXT:
                    embedder.embed_texts([QUERIES[trial % len(QUERIES)]])
                else:
                    embedder.embed_images([photo])
                if trial >= 3:  # the first calls warm caches and allocators
                    times[name][kind].append(time.perf_counter() - started)
    for name in live:
        report[name] = {f"{kind}_query": _percentiles(times[name][kind]) for kind in kinds}
    return report


def run(*, keys: list[str], names: list[str], images: int, batch_size: int | None, repeat: int,
        trials: int) -> dict[str, Any]:  # fmt: skip
    """Every (space, backend): img/s with decoding excluded and included, and query embedding latency."""
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backends {unknown}; use {', '.join(BACKENDS)}")
    for key in keys:
        if key not in settings.VITRINE_SPACES:
            raise ValueError(f"unknown space {key!r}")
    rows = list(ProductImage.objects.order_by("id")[: images or None])
    if not rows:
        raise ValueError("the catalogue has no images; import some first (make demo does)")
    photo = load_image_rgb(rows[0])
    figures: dict[str, Any] = {"cores": os.cpu_count(), "load_average_before": os.getloadavg(),
                               "inference_threads": runtime.inference_threads(),
                               "streams": runtime.inference_streams(),
                               "threads_per_stream": runtime.stream_threads(), "spaces": {}}  # fmt: skip
    for key in keys:
        try:
            entry: dict[str, Any] = {}
            if embedders.IMAGE in embedders.modalities(key):
                entry["throughput"] = runtime_throughput(
                    space=key, backends=names, rows=rows, batch_size=batch_size, repeat=repeat
                )
            entry["latency"] = query_latency(space=key, backends=names, photo=photo, trials=trials)
        except embedders.SpaceUnavailable as exc:
            entry = {"skipped": exc.reason}
        figures["spaces"][key] = entry
    figures["load_average_after"] = os.getloadavg()
    return figures


def format_table(figures: dict[str, Any], names: list[str]) -> Iterator[str]:
    """The figures of :func:`run` as a table, one line per (space, backend)."""

    def cell(value: Any, fmt: str = "{:.1f}") -> str:
        return fmt.format(value) if isinstance(value, (int, float)) else "-"

    yield (f"{'space':<7} {'backend':<10} {'batch':>5} {'img/s no decode':>16} {'img/s w/ decode':>16} "
                      f"{'x torch':>8} {'text p50/p95 ms':>16} {'photo p50/p95 ms':>17}")  # fmt: skip
    for key, entry in figures["spaces"].items():
        if "skipped" in entry:
            yield (f"{key:<7} unavailable: {entry['skipped']}")
            continue
        for name in names:
            speed = entry.get("throughput", {}).get(name, {})
            query = entry.get("latency", {}).get(name, {})
            reason = speed.get("skipped") or query.get("skipped")
            if reason:
                yield (f"{key:<7} {name:<10} not measured: {reason[:90]}")
                continue
            text, photo = query.get("text_query", {}), query.get("image_query", {})
            yield (
                f"{key:<7} {name:<10} {cell(speed.get('batch_size'), '{:d}'):>5} "
                f"{cell(speed.get('img_per_s_decode_excluded')):>16} "
                f"{cell(speed.get('img_per_s_decode_included')):>16} "
                f"{cell(speed.get('speedup_vs_torch'), '{:.2f}'):>8} "
                f"{cell(text.get('p50_ms')) + ' / ' + cell(text.get('p95_ms')):>16} "
                f"{cell(photo.get('p50_ms')) + ' / ' + cell(photo.get('p95_ms')):>17}"
            )
    yield (f"load average before {figures['load_average_before'][0]:.2f}, after "
                      f"{figures['load_average_after'][0]:.2f} on {figures['cores']} cores; images encoded "
                      f"{figures['streams']} batches at once, {figures['threads_per_stream']} thread(s) each "
                      "(queries: one pass)")  # fmt: skip
