"""The indexing pipeline measured: raw model throughput against the whole reindex path, and the time from an
upload's commit until search returns the new image (``benchmark`` without a mode, ``benchmark --latency``)."""

from __future__ import annotations

import io
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from PIL import Image

from catalog import services as catalog_services
from catalog.models import ProductImage
from search.embedders import Embedder
from search.indexing import versions
from search.indexing.bulk import images_embed_bulk
from search.indexing.sources import load_image_rgb
from search.lab.benchmarks.runtimes import encode_prepared
from search.models import EmbeddingStatus, ImageEmbedding
from search.querying.similar import product_query_vector, similar_to_vector


class BenchmarkError(RuntimeError):
    """A measurement could not be made (no worker, an empty catalogue); ``str()`` says why."""


def raw_vs_reindex(*, embedder: Embedder, rows: list[ProductImage], batch_size: int, repeat: int,
                   log: Callable[[str], None] = print,
                   progress: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """The model's forward pass alone vs ``images_embed_bulk`` end to end (decode, preprocess, forward,
    validation, DB upsert), same batch size, alternated ``repeat`` times in this one process; medians.
    ``progress`` hears each round, ``log`` the summary."""
    started = time.perf_counter()
    prepared = [embedder.preprocess(load_image_rgb(image, embedder)) for image in rows]
    decode_ms = 1000 * (time.perf_counter() - started) / len(rows)
    embedder.encode_batch(prepared[:batch_size])  # warm-up
    raw, e2e, shares = [], [], []
    forward = {"seconds": 0.0}
    lock = threading.Lock()
    encode = embedder.encode_batch
    streams = max(1, embedder.streams)

    def timed_encode(batch: list[Any]) -> Any:
        started = time.perf_counter()
        try:
            return encode(batch)
        finally:
            with lock:  # the streams' threads add up here
                forward["seconds"] += time.perf_counter() - started

    for round_ in range(repeat):
        started = time.perf_counter()
        encode_prepared(embedder, prepared, batch_size)
        raw.append(len(prepared) / (time.perf_counter() - started))
        forward["seconds"] = 0.0
        embedder.encode_batch = timed_encode  # type: ignore[method-assign]
        try:
            started = time.perf_counter()
            result = images_embed_bulk(space=embedder.key, image_ids=[r.pk for r in rows],
                                                batch_size=batch_size)  # fmt: skip
            elapsed = time.perf_counter() - started
        finally:
            embedder.encode_batch = encode  # type: ignore[method-assign]
        e2e.append(result.processed / elapsed)
        # Share of the streams' time (streams x wall) spent in forward passes: what is left is decode,
        # preprocessing and DB writes that the pipeline failed to hide. Robust to machine noise.
        shares.append(forward["seconds"] / (streams * elapsed))
        progress(f"round {round_ + 1}: raw {raw[-1]:.1f} img/s, reindex {e2e[-1]:.1f} img/s, "
                          f"streams busy {100 * shares[-1]:.1f}%")  # fmt: skip
    raw_median, e2e_median = statistics.median(raw), statistics.median(e2e)
    log(
        f"{embedder.key}: raw forward {raw_median:.1f} img/s, reindex end-to-end {e2e_median:.1f} img/s "
        f"({100 * e2e_median / raw_median:.0f}% of raw); forward passes fill "
        f"{100 * statistics.median(shares):.1f}% of {streams} stream(s) during the reindex; "
        f"decode+preprocess {decode_ms:.1f} ms/img on one thread"
    )
    return {"raw_img_per_s": raw, "reindex_img_per_s": e2e, "raw_median": raw_median,
            "reindex_median": e2e_median, "ratio": e2e_median / raw_median,
            "forward_share_of_reindex": shares, "decode_preprocess_ms_per_img": decode_ms}  # fmt: skip


def upload_to_searchable(
    *, space: str, trials: int, start_worker: bool, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """With a warm Celery worker, upload one image and wait until the space's nearest-neighbour search
    returns it; ``trials`` times, median and p95."""
    worker = _start_worker() if start_worker else None
    try:
        _upload_until_searchable(space, seed=-1, timeout=180)  # warm-up: worker up, model loaded
        times = [_upload_until_searchable(space, seed=trial, timeout=60) for trial in range(trials)]
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
    times.sort()
    median = statistics.median(times)
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
    log(f"{space}: upload to searchable, median {median * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
                      f"over {trials} uploads")  # fmt: skip
    return {"latency_s": times, "latency_median_s": median, "latency_p95_s": p95}


def _upload_until_searchable(space: str, *, seed: int, timeout: float) -> float:
    """Seconds from the upload's commit until a search in ``space`` returns the new image first."""
    with transaction.atomic():
        product = catalog_services.product_create(title=f"Latency probe {seed}")
        image = catalog_services.product_image_add(product=product, file=_probe_image(seed))
    started = time.perf_counter()  # committed: the embedding task is on its way
    try:
        while time.perf_counter() - started < timeout:
            version = versions.active_version(space)
            if version and ImageEmbedding.objects.filter(image=image, space=space, model_version=version.version,
                                                         status=EmbeddingStatus.OK).exists():  # fmt: skip
                query = product_query_vector(product=product, space=space, version=version.version)
                hits = similar_to_vector(vector=query, space=space, version=version, k=1)
                if hits and hits[0].image_id == image.pk:
                    return time.perf_counter() - started
            time.sleep(0.005)
        raise BenchmarkError(f"image {image.pk} was not searchable in {space} within {timeout:.0f} s; "
                           "is a worker running (or pass --start-worker)?")  # fmt: skip
    finally:
        catalog_services.product_delete(product=product)


def _start_worker() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "embeddings,default",
         "--concurrency", "1", "--loglevel", "WARNING", "--hostname", f"bench-{os.getpid()}@%h"],
        cwd=settings.BASE_DIR,
    )  # fmt: skip


def _probe_image(seed: int) -> bytes:
    """A unique 320×240 photo-like image (smooth gradients plus noise), so its checksum is new."""
    rng = np.random.default_rng(seed + 1_000_003)
    y, x = np.mgrid[0:240, 0:320]
    base = np.stack([x / 320, y / 240, (x + y) / 560], axis=-1) * 255
    pixels = np.clip(base * rng.uniform(0.3, 1.0, 3) + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()
