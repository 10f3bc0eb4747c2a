"""Search quality and speed measurements used by ``manage.py benchmark``.

* :func:`similar_recall`: HNSW "similar products" against an exact cosine scan of the same stored vectors,
  recall@k over every indexed product, with and without a same-category filter;
* :func:`photo_self_retrieval`: each catalogue image, uploaded to photo search, should find its own product first;
* :func:`seed_synthetic`: a synthetic catalogue of N products with clustered vectors, for load tests at scale;
* :func:`load_test`: gunicorn + locust (headless) against the similar-products API and product pages.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from PIL import Image

from catalog.models import Product, ProductImage
from search import selectors
from search.embedders import runtime
from search.models import EmbeddingStatus, ImageEmbedding, SpaceState, SpaceVersion
from search.vectorstores import Filters, get_store
from search.vectorstores.pgvector import images_copy


def _exact_neighbours(vectors: np.ndarray, product_of: np.ndarray, query: np.ndarray, exclude: int, k: int,
                      allowed: np.ndarray | None) -> list[int]:  # fmt: skip
    """Top-k products by best-image cosine, brute force."""
    scores = vectors @ query
    mask = product_of != exclude
    if allowed is not None:
        mask &= allowed
    order = np.argsort(-np.where(mask, scores, -np.inf))
    seen: list[int] = []
    for index in order:
        if not mask[index]:
            break
        product = int(product_of[index])
        if product not in seen:
            seen.append(product)
            if len(seen) == k:
                break
    return seen


def similar_recall(*, space: str, k: int = 10, limit: int | None = None,
                   progress: Callable[[int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """recall@k of ``similar_products`` (HNSW, iterative scans) against the exact answer."""
    version = selectors.active_version(space)
    rows = list(
        ImageEmbedding.objects.filter(space=space, model_version=version.version, status=EmbeddingStatus.OK,
                                      image__product__is_active=True)
        .values_list("image__product_id", "image__product__category__path", "vector")
    )  # fmt: skip
    product_of = np.array([r[0] for r in rows])
    paths = np.array([r[1] or "" for r in rows], dtype=object)
    vectors = np.stack([np.asarray(r[2], dtype=np.float32) for r in rows])
    products = list(Product.objects.published().filter(pk__in=set(product_of.tolist())).select_related("category"))
    if limit:
        rng = np.random.default_rng(0)
        products = [products[i] for i in rng.choice(len(products), size=min(limit, len(products)), replace=False)]
    recalls: dict[str, list[float]] = {"all": [], "same category": []}
    for product in products:
        query = selectors.product_query_vector(product=product, space=space, version=version.version)
        for label, path in (("all", None), ("same category", product.category.path if product.category else None)):
            if label == "same category" and path is None:
                continue
            filters = Filters(category_path=path) if path else None
            allowed = None
            if path:
                allowed = np.array([p == path or p.startswith(path + "/") for p in paths])
            exact = _exact_neighbours(vectors, product_of, query, product.pk, k, allowed)
            if not exact:
                continue
            got = [h.product_id for h in selectors.similar_products(product=product, k=k, space=space,
                                                                     filters=filters)]  # fmt: skip
            recalls[label].append(len(set(got) & set(exact)) / len(exact))
        if progress:
            progress(1)
    return {f"recall@{k} ({label})": float(np.mean(v)) for label, v in recalls.items() if v} | {
        "queries": len(products),
        "vectors": len(rows),
        "space": space,
    }


def photo_self_retrieval(*, space: str | None = None, limit: int | None = None,
                         progress: Callable[[int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Upload each product's primary image to photo search; how often is its own product first?"""
    from catalog.services import image_inspect

    images = list(ProductImage.objects.filter(is_primary=True, product__is_active=True).select_related("product"))
    if limit:
        images = images[:limit]
    first = 0
    used = space
    for image in images:
        with image.file.open("rb") as fh:
            inspected = image_inspect(fh.read())
        hits, used = selectors.photo_search(image=inspected.rgb, k=5, space=space)
        first += bool(hits) and hits[0].product_id == image.product_id
        if progress:
            progress(1)
    return {"photo_self_retrieval": first / len(images) if images else 0.0, "images": len(images), "space": used}


def cluster_centers(rng: np.random.Generator, *, clusters: int, dimension: int) -> np.ndarray:
    centers = rng.normal(size=(clusters, dimension)).astype(np.float32)
    return centers / np.linalg.norm(centers, axis=1, keepdims=True)


def clustered_vectors(rng: np.random.Generator, *, centers: np.ndarray, n: int,
                      spread: float = 0.9) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``n`` unit vectors around random ``centers`` (and which centre each came from), like a shop's embeddings.

    The noise has norm ≈ ``spread`` (cosine ≈ 0.74 to the centre at 0.9), so a cluster's members are about
    as close to each other as to many of their neighbours: approximate search has real work to do.
    """
    cluster = rng.integers(0, len(centers), n)
    dimension = centers.shape[1]
    vectors = centers[cluster] + rng.normal(size=(n, dimension)).astype(np.float32) * (spread / np.sqrt(dimension))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), cluster


def seed_synthetic(*, count: int, dimension: int = 512, space: str = "clip", clusters: int = 200,
                   categories: int = 20, progress: Callable[[int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """A synthetic catalogue: ``count`` products, one image row each, clustered unit vectors in ``space``.

    The image rows share one real image file (so product pages render); the vectors come
    from ``clusters`` Gaussian clusters spread over ``categories`` categories, like the
    embeddings of a real shop. The space is recorded as available with this version active.
    """
    from catalog import services as catalog_services
    from catalog.imaging import derivative_jpeg

    if Product.objects.exists():
        raise ValueError("seed_synthetic wants an empty catalogue: use a fresh VITRINE_HOME")
    rng = np.random.default_rng(42)
    cats = [catalog_services.category_from_path(path=f"Synthetic {i:02d}") for i in range(categories)]
    template = catalog_services.product_create(title="Synthetic template", is_active=False)
    picture = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    shared = catalog_services.product_image_add(product=template, file=derivative_jpeg(picture, max_side=160))
    centers = cluster_centers(rng, clusters=clusters, dimension=dimension)
    version = f"synthetic-{dimension}d"
    batch = 5000
    for start in range(0, count, batch):
        n = min(batch, count - start)
        vectors, cluster = clustered_vectors(rng, centers=centers, n=n)
        with transaction.atomic():
            products = Product.objects.bulk_create([
                Product(title=f"Synthetic product {start + i}", slug=f"synthetic-{start + i}",
                        sku=f"SYN-{start + i:08d}", price=round(float(rng.uniform(2, 200)), 2),
                        stock=int(rng.integers(0, 20)), category=cats[int(cluster[i]) % categories],
                        currency=str(settings.VITRINE_CURRENCY))
                for i in range(n)
            ])  # fmt: skip
            images = ProductImage.objects.bulk_create([
                ProductImage(product=p, file=shared.file.name, thumbnail=shared.thumbnail.name,
                             display=shared.display.name, checksum=f"{start + i + 1:064x}", format="JPEG",
                             width=shared.width, height=shared.height, is_primary=True)
                for i, p in enumerate(products)
            ])  # fmt: skip
            # A fresh version: binary COPY straight into the table; the index comes once, after the load.
            images_copy(space=space, version=version, items=[(image.pk, vectors[i]) for i, image in enumerate(images)],
                        fresh=True)  # fmt: skip
        if progress:
            progress(n)
    SpaceVersion.objects.filter(space=space).delete()
    SpaceVersion.objects.create(space=space, version=version, dimension=dimension, state=SpaceVersion.State.ACTIVE,
                                activated_at=timezone.now())  # fmt: skip
    state = {"available": True, "reason": "", "model_id": "synthetic", "checked_at": timezone.now()}
    SpaceState.objects.update_or_create(key=space, defaults=state)
    started = time.perf_counter()
    get_store().ensure_version(space=space, version=version, dimension=dimension)  # sizes maintenance_work_mem
    get_store().rebuild(space=space, version=version, dimension=dimension)  # Milvus: load, then index
    return {"products": count, "dimension": dimension, "space": space, "version": version,
            "index_build_s": time.perf_counter() - started}  # fmt: skip


LOCUSTFILE = """
import random
from locust import HttpUser, between, task

IDS = {ids!r}
SLUGS = {slugs!r}


class Shopper(HttpUser):
    wait_time = between({wait_min}, {wait_max})

    @task
    def similar_api(self):
        self.client.get(f"/api/products/{{random.choice(IDS)}}/similar?k=10", name="/api/products/[id]/similar")

    @task
    def product_page(self):
        self.client.get(f"/products/{{random.choice(SLUGS)}}/", name="/products/[slug]/")
"""


SHOP_LOCUSTFILE = """
import random
from locust import HttpUser, between, task

IDS = {ids!r}
SLUGS = {slugs!r}
WORDS = ["apple", "red mug", "guitar", "laptop", "shirt", "hammer", "juice", "bicycle", "pen", "cake"]
PHOTO = open({photo!r}, "rb").read()


class Shopper(HttpUser):
    wait_time = between({wait_min}, {wait_max})

    @task(3)
    def browse(self):
        self.client.get(random.choice(["/", "/products/", "/products/?page=2"]), name="browse")
        self.client.get(f"/products/{{random.choice(SLUGS)}}/", name="/products/[slug]/")

    @task(2)
    def similar_api(self):
        self.client.get(f"/api/products/{{random.choice(IDS)}}/similar?k=10", name="/api/products/[id]/similar")

    @task(2)
    def text_search(self):
        self.client.get("/search/", params={{"q": random.choice(WORDS)}}, name="/search/?q=")

    @task(1)
    def photo_search(self):
        self.client.post("/api/search/image?k=10", files={{"image": ("photo.png", PHOTO, "image/png")}},
                         name="/api/search/image")
"""


def load_test(*, users: int = 10, duration: int = 60, web_workers: int = 2, wait: tuple[float, float] = (0.5, 1.5),
              out_dir: Path, warm_queries: int = 3000, scenario: str = "similar",
              during_reindex: str | None = None, reindex_threads: int = 0) -> dict[str, Any]:  # fmt: skip
    """Serve the shop with gunicorn and drive it with locust (headless); p50/p95 per endpoint.

    ``during_reindex``: a ``reindex --sync`` of that space runs meanwhile, on ``reindex_threads`` inference
    threads (0: every core, as a Celery worker on the same machine would use them), again and again until
    the load ends, so the whole measurement is under a reindex.
    """
    rng = np.random.default_rng(7)
    indexed = ImageEmbedding.objects.filter(status=EmbeddingStatus.OK, image__product__is_active=True)
    ids = list(indexed.values_list("image__product_id", flat=True).distinct()[:200000])
    sample = [int(i) for i in rng.choice(ids, size=min(2000, len(ids)), replace=False)]
    slugs = list(Product.objects.filter(pk__in=sample).values_list("slug", flat=True))
    # Warm the server's caches the way a live shop is warm: vector searches for *other* products,
    # so the HNSW graph is in shared buffers but the measured queries are not pre-answered.
    others = [int(i) for i in rng.choice(list(set(ids) - set(sample)), size=min(warm_queries, len(ids) - len(sample)),
                                         replace=False)] if warm_queries else []  # fmt: skip
    version = selectors.image_space_version()
    for product in Product.objects.filter(pk__in=others):
        try:
            selectors.similar_products(product=product, k=10, version=version)
        except selectors.NotIndexed:
            continue
    out_dir.mkdir(parents=True, exist_ok=True)
    locustfile = out_dir / "locustfile.py"
    if scenario == "shop":
        photo = ProductImage.objects.filter(product_id__in=sample).first()
        assert photo is not None
        photo_path = str(Path(settings.MEDIA_ROOT) / str(photo.file.name))
        locustfile.write_text(SHOP_LOCUSTFILE.format(ids=sample, slugs=slugs, wait_min=wait[0], wait_max=wait[1],
                                                     photo=photo_path))  # fmt: skip
    else:
        locustfile.write_text(LOCUSTFILE.format(ids=sample, slugs=slugs, wait_min=wait[0], wait_max=wait[1]))
    port = _free_port()
    # The load comes from one address; per-client rate limits would turn it into 429s.
    env = {**os.environ, "DEBUG": "false", "VITRINE_HOME": str(settings.VITRINE_HOME),
           "DJANGO_SETTINGS_MODULE": "config.settings.local", "VITRINE_RATE_LIMIT_SEARCH": "0",
           "VITRINE_RATE_LIMIT_PHOTO": "0", "VITRINE_PRELOAD_QUERY_MODELS": "true",
           "VITRINE_TORCH_THREADS": "1"}  # fmt: skip
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:config.gunicorn", "config.wsgi", "--bind",
         f"127.0.0.1:{port}", "--workers", str(web_workers), "--no-control-socket", "--log-level", "warning"],
        cwd=settings.BASE_DIR, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/")
        for slug in slugs[:20]:  # warm every worker's connections and code paths
            _wait_http(f"http://127.0.0.1:{port}/products/{slug}/")
        prefix = out_dir / "locust"
        reindex = None
        if during_reindex:
            # Not the web's one thread per process: the reindex gets what a worker would have.
            reindex_env = {key: value for key, value in env.items() if key != "VITRINE_TORCH_THREADS"}
            reindex_env["VITRINE_INFERENCE_THREADS"] = str(reindex_threads)
            command = (f"while true; do {sys.executable} manage.py reindex --space {during_reindex} --sync "
                       "--no-progress || exit 1; done")  # fmt: skip
            reindex = subprocess.Popen(["sh", "-c", command], cwd=settings.BASE_DIR, env=reindex_env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(users), "-r",
             str(users), "-t", f"{duration}s", "--host", f"http://127.0.0.1:{port}", "--csv", str(prefix),
             "--only-summary", "--loglevel", "WARNING"],
            cwd=out_dir, env=env, check=False,
        )  # fmt: skip
        if reindex is not None:
            stats_reindex_running = reindex.poll() is None  # False: a reindex failed
            os.killpg(reindex.pid, signal.SIGTERM)
            reindex.wait(timeout=60)
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)
    stats: dict[str, Any] = {"users": users, "duration_s": duration, "think_time_s": list(wait),
                             "web_workers": web_workers, "warm_up_queries": len(others), "scenario": scenario,
                             "during_reindex": during_reindex}  # fmt: skip
    if during_reindex:
        stats["reindex_ran_throughout"] = stats_reindex_running
        stats["reindex_threads"] = reindex_threads
    with open(f"{prefix}_stats.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            stats[row["Name"]] = {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                                  "p50_ms": float(row["50%"]), "p95_ms": float(row["95%"]),
                                  "p99_ms": float(row["99%"]), "rps": float(row["Requests/s"])}  # fmt: skip
    return stats


def _wait_http(url: str, timeout: float = 60.0) -> None:
    from config.health import wait_until_answers

    if not wait_until_answers(url, timeout=timeout):
        raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- inference runtimes: manage.py benchmark --runtimes ----------------------------------------------------

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
    from search import embedders

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
    from search import services
    from search.services import load_image_rgb

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
                for _, encoded in services.encoded_batches(embedder, rows, size, workers):
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
    from search import embedders

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
