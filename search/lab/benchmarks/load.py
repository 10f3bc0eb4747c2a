"""The shop under load: gunicorn serving this catalogue, locust (headless) playing shoppers."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection

from catalog.models import Product, ProductImage
from config.health import wait_until_answers
from search.models import EmbeddingStatus, ImageEmbedding
from search.querying import hybrid, similar
from search.vectorstores import get_store
from search.vectorstores.base import VersionRef
from search.vectorstores.sql import BREADTH_PREFIX, PREPARE_PREFIX

LOCUSTFILE = """
import random
from locust import HttpUser, between, task

IDS = {ids!r}
SLUGS = {slugs!r}


class Shopper(HttpUser):
    wait_time = between({wait_min}, {wait_max})

    @task
    def similar_by_look(self):
        self.client.get(f"/api/products/{{random.choice(IDS)}}/similar?k=10&space={image_space}",
                        name="/api/products/[id]/similar?space={image_space}")

    @task
    def similar_hybrid(self):
        self.client.get(f"/api/products/{{random.choice(IDS)}}/similar?k=10&space=hybrid",
                        name="/api/products/[id]/similar?space=hybrid")

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
    rankings = [similar.similar_ranking(similar.image_space_version().space), similar.similar_ranking()]
    for product in Product.objects.filter(pk__in=others):
        for ranking in rankings:  # by look, and hybrid when the text space has vectors (its index warms too)
            try:
                similar.similar_products(product=product, k=10, ranking=ranking)
            except similar.NotIndexed:
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
        locustfile.write_text(LOCUSTFILE.format(ids=sample, slugs=slugs, wait_min=wait[0], wait_max=wait[1],
                                                image_space=rankings[0].space))  # fmt: skip
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
        sampler = VectorSearchSampler(ids=sample, rankings=rankings) if scenario == "similar" else None
        if sampler:
            sampler.start()
        subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(users), "-r",
             str(users), "-t", f"{duration}s", "--host", f"http://127.0.0.1:{port}", "--csv", str(prefix),
             "--only-summary", "--loglevel", "WARNING"],
            cwd=out_dir, env=env, check=False,
        )  # fmt: skip
        if sampler:
            sampler.stop.set()
            sampler.join(timeout=60)
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
    if sampler:
        stats["vector_search"] = sampler.figures()
        stats["ratios"] = similar_ratios(stats, image_space=rankings[0].space)
    return stats


def similar_ratios(stats: dict[str, Any], *, image_space: str) -> dict[str, float]:
    """The section 5 goals, from one run: hybrid's p95 against by-look's, and by-look's against its vector search."""
    look = stats.get(f"/api/products/[id]/similar?space={image_space}")
    both = stats.get("/api/products/[id]/similar?space=hybrid")
    search = stats.get("vector_search", {}).get("image", {})
    out: dict[str, float] = {}
    if look and both and look["p95_ms"]:
        out["hybrid_p95_over_image_p95"] = both["p95_ms"] / look["p95_ms"]
    for key in ("store_call", "postgres"):
        if look and search.get(f"{key}_p95_ms"):
            out[f"image_request_p95_over_{key}_p95"] = look["p95_ms"] / search[f"{key}_p95_ms"]
            out[f"image_request_p50_over_{key}_p50"] = look["p50_ms"] / search[f"{key}_p50_ms"]
    return out


class _Capture:
    """A database execute wrapper that keeps each statement and its parameters (to EXPLAIN it afterwards)."""

    def __init__(self, into: list[tuple[str, Any]]) -> None:
        self.into = into

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.into.append((sql, params))
        return execute(sql, params, many, context)


class VectorSearchSampler(threading.Thread):
    """While the load runs, the vector searches behind the two similar-products endpoints, in this process, over the
    same products, one every ``pause`` seconds (a light extra shopper): the store call's wall time (one round trip)
    and Postgres' own planning + execution time of that statement (``EXPLAIN ANALYZE``, run right after)."""

    def __init__(self, *, ids: list[int], rankings: list[similar.Ranking], pause: float = 0.5, k: int = 10) -> None:
        super().__init__(daemon=True)
        self.ids, self.rankings, self.pause, self.k = ids, rankings, pause, k
        self.stop = threading.Event()
        self.samples: dict[str, dict[str, list[float]]] = {}

    def _search(self, ranking: similar.Ranking, product_id: int) -> None:
        store, image, text = get_store(), ranking.image, ranking.text
        if text is None:  # what similar_to_vector asks for k results
            store.nearest_images(space=image.space, version=image.version, dimension=image.dimension,
                                 k=max(2 * self.k, 20), exclude_product_id=product_id,
                                 like_product_id=product_id)  # fmt: skip
        else:
            store.similar_candidates(product_id=product_id, pool=hybrid.pool_size(self.k),
                                     image=VersionRef(image.space, image.version, image.dimension),
                                     text=VersionRef(text.space, text.version, text.dimension))  # fmt: skip

    def run(self) -> None:
        rng = np.random.default_rng(11)
        try:
            while not self.stop.is_set():
                product_id = int(rng.choice(self.ids))
                for ranking in self.rankings:
                    statements: list[tuple[str, Any]] = []
                    with connection.execute_wrapper(_Capture(statements)):
                        started = time.perf_counter()
                        self._search(ranking, product_id)
                        wall = (time.perf_counter() - started) * 1000
                    kind = "hybrid" if ranking.text else "image"
                    figures = self.samples.setdefault(kind, {"store_call": [], "postgres": []})
                    figures["store_call"].append(wall)
                    if get_store().mirrors_catalog:  # Milvus answered: no vector statement to explain
                        continue
                    sql, params = statements[-1]
                    sql = sql[PREPARE_PREFIX.match(sql).end() :]  # type: ignore[union-attr] # prepared by the search
                    breadth = BREADTH_PREFIX.match(sql)  # explained with the breadth it ran with
                    prefix = breadth.group(0) if breadth else ""
                    with connection.cursor() as cursor:
                        cursor.execute(f"{prefix}EXPLAIN (ANALYZE, FORMAT JSON) {sql[len(prefix) :]}", params)
                        if prefix:
                            cursor.nextset()
                        plan = cursor.fetchone()[0]
                    plan = json.loads(plan) if isinstance(plan, str) else plan
                    figures["postgres"].append(float(plan[0]["Planning Time"]) + float(plan[0]["Execution Time"]))
                self.stop.wait(self.pause)
        finally:
            connection.close()

    def figures(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for kind, series in self.samples.items():
            out[kind] = {"samples": len(series["store_call"])}
            for key, values in series.items():
                if not values:
                    continue
                out[kind][f"{key}_p50_ms"] = float(np.percentile(values, 50))
                out[kind][f"{key}_p95_ms"] = float(np.percentile(values, 95))
        return out


def _wait_http(url: str, timeout: float = 60.0) -> None:
    if not wait_until_answers(url, timeout=timeout):
        raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
