"""manage.py benchmark — embedding throughput, upload latency, search quality and search load, measured here.

* throughput (default): the model's forward pass alone vs ``images_embed_bulk`` end to end (decode,
  preprocess, forward, validation, DB upsert), same batch size, alternated ``--repeat`` times in this
  one process, medians reported;
* ``--latency N``: with a warm Celery worker, upload one image and wait until the space's
  nearest-neighbour search returns it; N times, median and p95;
* ``--search-quality``: recall@10 of "similar products" against an exact cosine scan (also with a
  same-category filter), and how often photo search finds a catalogue image's own product first;
* ``--seed-synthetic N``: fill an empty catalogue with N synthetic products and clustered vectors;
* ``--load-test``: gunicorn + locust (headless) on the similar-products API and product pages;
* ``--runtimes``: per space (``--spaces``) and backend (``--backends``: eager torch, ONNX fp32, ONNX int8),
  img/s with decoding excluded and included, and p50/p95 of a text and a photo query's embedding, all in
  this one process with rounds interleaved; a table, and JSON with ``--json-out``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from PIL import Image

from catalog import services as catalog_services
from catalog.models import ProductImage
from search import benchmarks, benchmarks_stores, embedders, services
from search.embedders import runtime
from search.models import EmbeddingStatus, ImageEmbedding
from search.selectors import product_query_vector, similar_to_vector
from search.services import load_image_rgb


class Command(BaseCommand):
    help = "Measure raw model throughput vs end-to-end reindex throughput, and upload-to-searchable latency."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--space", default="cnn", choices=list(settings.VITRINE_SPACES))
        parser.add_argument("--batch-size", type=int, default=None,
                            help="Default 32; with --runtimes, each space's BATCH_SIZE.")  # fmt: skip
        parser.add_argument("--images", type=int, default=0, help="How many catalogue images (0 = all).")
        parser.add_argument("--repeat", type=int, default=5, help="Alternating raw/reindex rounds (0 = skip).")
        parser.add_argument("--latency", type=int, default=0, help="Upload-to-searchable trials (needs a worker).")
        parser.add_argument("--start-worker", action="store_true", help="Start a Celery worker for --latency.")
        parser.add_argument("--search-quality", action="store_true", help="Recall vs exact, photo self-retrieval.")
        parser.add_argument("--queries", type=int, default=0, help="Limit --search-quality queries (0 = all).")
        parser.add_argument("--seed-synthetic", type=int, default=0, metavar="N",
                            help="Seed N synthetic products, clustered vectors (empty catalogue only).")  # fmt: skip
        parser.add_argument("--dim", type=int, default=512, help="Dimension of synthetic vectors.")
        parser.add_argument("--load-test", action="store_true", help="gunicorn + locust against the search pages.")
        parser.add_argument("--users", type=int, default=10)
        parser.add_argument("--duration", type=int, default=60, help="Load test seconds.")
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument(
            "--scenario",
            choices=["similar", "shop"],
            default="similar",
            help="similar: API + product pages; shop: browsing, similar, text and photo search.",
        )
        parser.add_argument("--during-reindex", metavar="SPACE", help="Run `reindex --sync` of SPACE meanwhile.")
        parser.add_argument("--reindex-threads", type=int, default=0,
                            help="Threads of that reindex (0: every core, as a worker has them).")  # fmt: skip
        parser.add_argument("--json", dest="json_path", type=Path, help="Also write the figures here.")
        runtimes = parser.add_argument_group("inference runtimes (--runtimes)")
        runtimes.add_argument("--runtimes", action="store_true", help="Compare torch / ONNX / int8 side by side.")
        runtimes.add_argument("--spaces", default="cnn,clip,text", help="Comma-separated spaces for --runtimes.")
        runtimes.add_argument("--backends", default=",".join(benchmarks.BACKENDS),
                              help=f"Comma-separated, of {', '.join(benchmarks.BACKENDS)}.")  # fmt: skip
        runtimes.add_argument("--query-trials", type=int, default=50, help="Query embeddings timed per backend.")
        runtimes.add_argument("--json-out", type=Path, help="Write the --runtimes figures here as JSON.")
        stores = parser.add_argument_group("vector stores (search.benchmarks_stores)")
        stores.add_argument("--stores", help="Compare vector stores on synthetic vectors: a comma list of "
                            "exact,pgvector,halfvec,milvus (uses --dim and --queries, default 200).")  # fmt: skip
        stores.add_argument("--n", type=int, default=100_000, help="How many vectors for --stores.")
        stores.add_argument("--filter-selectivity", type=float, default=0.1, help="Share of vectors the filter keeps.")
        stores.add_argument("--ef", default=",".join(map(str, benchmarks_stores.EF_SWEEP)),
                            help="ef_search values to sweep, comma-separated.")  # fmt: skip
        stores.add_argument("--recall-target", type=float, default=0.95)
        stores.add_argument("--exact-queries", type=int, default=50, help="Queries for the exact scan (slow).")
        stores.add_argument("--hnsw-m", type=int, default=benchmarks_stores.HNSW_M,
                            help="pgvector HNSW m for --stores (the shop's default unless given).")  # fmt: skip
        stores.add_argument("--hnsw-ef-construction", type=int, default=benchmarks_stores.HNSW_EF_CONSTRUCTION)
        stores.add_argument("--reuse-milvus", action="store_true",
                            help="Resume: reuse the milvus-lite collection of an earlier run.")  # fmt: skip

    def handle(self, *args: Any, space: str, batch_size: int | None, images: int, repeat: int, latency: int,
               start_worker: bool, search_quality: bool, queries: int, seed_synthetic: int, dim: int,
               load_test: bool, users: int, duration: int, web_workers: int, scenario: str,
               during_reindex: str | None, json_path: Path | None,
               **options: Any) -> None:  # fmt: skip
        if options.get("stores"):
            self._stores(options, dim=dim, queries=queries or 200, json_path=json_path)
            return
        figures: dict[str, Any] = {"cores": os.cpu_count()}
        if options.get("runtimes"):
            self._runtimes(spaces=options["spaces"], backends=options["backends"], images=images,
                           batch_size=batch_size, repeat=max(1, repeat), trials=options["query_trials"],
                           json_out=options.get("json_out"))  # fmt: skip
            return
        batch_size = batch_size or 32
        search_modes = bool(search_quality or seed_synthetic or load_test)
        if seed_synthetic:
            started = time.perf_counter()
            figures["seed"] = benchmarks.seed_synthetic(count=seed_synthetic, dimension=dim)
            self.stdout.write(f"seeded {seed_synthetic} synthetic products ({dim}-d) in "
                              f"{time.perf_counter() - started:.0f} s; index built in "
                              f"{figures['seed']['index_build_s']:.0f} s")  # fmt: skip
        if search_quality:
            figures["similar"] = benchmarks.similar_recall(space=space, limit=queries or None)
            self.stdout.write(f"similar products vs exact: {figures['similar']}")
            figures["photo"] = benchmarks.photo_self_retrieval(space=space, limit=queries or None)
            self.stdout.write(f"photo search, own product first: {figures['photo']}")
        if load_test:
            out = Path(settings.VITRINE_HOME) / "benchmarks" / "load"
            figures["load"] = benchmarks.load_test(
                users=users,
                duration=duration,
                web_workers=web_workers,
                out_dir=out,
                scenario=scenario,
                during_reindex=during_reindex,
                reindex_threads=options.get("reindex_threads") or 0,
            )
            for name, row in figures["load"].items():
                if isinstance(row, dict):
                    self.stdout.write(f"{name}: p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms, "
                                      f"{row['rps']:.1f} req/s, {row['failures']} failures")  # fmt: skip
        if repeat > 0 and not search_modes:
            embedder = services.space_load(space)
            rows = list(ProductImage.objects.order_by("id")[: images or None])
            if not rows:
                raise CommandError("the catalogue has no images; import some first (make demo does)")
            figures.update(space=space, version=embedder.version, batch_size=batch_size, images=len(rows))
            figures.update(self._throughput(embedder, rows, batch_size, repeat))
        if latency > 0:
            figures.update(self._latency(space, latency, start_worker))
        if json_path:
            json_path.write_text(json.dumps(figures, indent=2, default=str))
        self.stdout.write(json.dumps(figures, indent=2, default=str))

    # -- inference runtimes (--runtimes) ----------------------------------------------------------------
    def _runtimes(self, *, spaces: str, backends: str, images: int, batch_size: int | None, repeat: int, trials: int,
                  json_out: Path | None) -> None:  # fmt: skip
        names = [b.strip() for b in backends.split(",") if b.strip()]
        unknown = [b for b in names if b not in benchmarks.BACKENDS]
        if unknown:
            raise CommandError(f"unknown backends {unknown}; use {', '.join(benchmarks.BACKENDS)}")
        keys = [k.strip() for k in spaces.split(",") if k.strip()]
        for key in keys:
            if key not in settings.VITRINE_SPACES:
                raise CommandError(f"unknown space {key!r}")
        rows = list(ProductImage.objects.order_by("id")[: images or None])
        if not rows:
            raise CommandError("the catalogue has no images; import some first (make demo does)")
        photo = load_image_rgb(rows[0])
        figures: dict[str, Any] = {"cores": os.cpu_count(), "load_average_before": os.getloadavg(),
                                   "inference_threads": runtime.inference_threads(),
                                   "streams": runtime.inference_streams(),
                                   "threads_per_stream": runtime.stream_threads(), "spaces": {}}  # fmt: skip
        for key in keys:
            try:
                entry: dict[str, Any] = {}
                if embedders.IMAGE in embedders.modalities(key):
                    entry["throughput"] = benchmarks.runtime_throughput(
                        space=key, backends=names, rows=rows, batch_size=batch_size, repeat=repeat
                    )
                entry["latency"] = benchmarks.query_latency(space=key, backends=names, photo=photo, trials=trials)
            except embedders.SpaceUnavailable as exc:
                entry = {"skipped": exc.reason}
            figures["spaces"][key] = entry
        figures["load_average_after"] = os.getloadavg()
        self._runtimes_table(figures, names)
        if json_out:
            json_out.write_text(json.dumps(figures, indent=2, default=str))
            self.stdout.write(f"figures written to {json_out}")

    def _runtimes_table(self, figures: dict[str, Any], names: list[str]) -> None:
        def cell(value: Any, fmt: str = "{:.1f}") -> str:
            return fmt.format(value) if isinstance(value, (int, float)) else "-"

        self.stdout.write(f"{'space':<7} {'backend':<10} {'batch':>5} {'img/s no decode':>16} {'img/s w/ decode':>16} "
                          f"{'x torch':>8} {'text p50/p95 ms':>16} {'photo p50/p95 ms':>17}")  # fmt: skip
        for key, entry in figures["spaces"].items():
            if "skipped" in entry:
                self.stdout.write(f"{key:<7} unavailable: {entry['skipped']}")
                continue
            for name in names:
                speed = entry.get("throughput", {}).get(name, {})
                query = entry.get("latency", {}).get(name, {})
                reason = speed.get("skipped") or query.get("skipped")
                if reason:
                    self.stdout.write(f"{key:<7} {name:<10} not measured: {reason[:90]}")
                    continue
                text, photo = query.get("text_query", {}), query.get("image_query", {})
                self.stdout.write(
                    f"{key:<7} {name:<10} {cell(speed.get('batch_size'), '{:d}'):>5} "
                    f"{cell(speed.get('img_per_s_decode_excluded')):>16} "
                    f"{cell(speed.get('img_per_s_decode_included')):>16} "
                    f"{cell(speed.get('speedup_vs_torch'), '{:.2f}'):>8} "
                    f"{cell(text.get('p50_ms')) + ' / ' + cell(text.get('p95_ms')):>16} "
                    f"{cell(photo.get('p50_ms')) + ' / ' + cell(photo.get('p95_ms')):>17}"
                )
        self.stdout.write(f"load average before {figures['load_average_before'][0]:.2f}, after "
                          f"{figures['load_average_after'][0]:.2f} on {figures['cores']} cores; images encoded "
                          f"{figures['streams']} batches at once, {figures['threads_per_stream']} thread(s) each "
                          "(queries: one pass)")  # fmt: skip

    # -- vector stores ---------------------------------------------------------------------------
    def _stores(self, options: dict[str, Any], *, dim: int, queries: int, json_path: Path | None) -> None:
        stores = [name.strip() for name in str(options["stores"]).split(",") if name.strip()]
        try:
            figures = benchmarks_stores.run(
                stores=stores, n=options["n"], dimension=dim, queries=queries,
                selectivity=options["filter_selectivity"], target=options["recall_target"],
                ef_sweep=[int(x) for x in str(options["ef"]).split(",")], exact_queries=options["exact_queries"],
                json_path=json_path, log=lambda line: self.stderr.write(line), reuse_milvus=options["reuse_milvus"],
                graph=benchmarks_stores.Graph(m=options["hnsw_m"], ef_construction=options["hnsw_ef_construction"]),
            )  # fmt: skip
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{figures['n']} × {figures['dimension']}-d, {figures['queries']} queries, "
                          f"recall@10 target {figures['recall_target']}, "
                          f"filter keeps {figures['filter_selectivity']:.0%}")  # fmt: skip
        for line in benchmarks_stores.format_table(figures):
            self.stdout.write(line)

    # -- throughput -------------------------------------------------------------------------------
    def _throughput(self, embedder: embedders.Embedder, rows: list[ProductImage], batch_size: int,
                    repeat: int) -> dict[str, Any]:  # fmt: skip
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
            benchmarks.encode_prepared(embedder, prepared, batch_size)
            raw.append(len(prepared) / (time.perf_counter() - started))
            forward["seconds"] = 0.0
            embedder.encode_batch = timed_encode  # type: ignore[method-assign]
            try:
                started = time.perf_counter()
                result = services.images_embed_bulk(space=embedder.key, image_ids=[r.pk for r in rows],
                                                    batch_size=batch_size)  # fmt: skip
                elapsed = time.perf_counter() - started
            finally:
                embedder.encode_batch = encode  # type: ignore[method-assign]
            e2e.append(result.processed / elapsed)
            # Share of the streams' time (streams x wall) spent in forward passes: what is left is decode,
            # preprocessing and DB writes that the pipeline failed to hide. Robust to machine noise.
            shares.append(forward["seconds"] / (streams * elapsed))
            self.stderr.write(f"round {round_ + 1}: raw {raw[-1]:.1f} img/s, reindex {e2e[-1]:.1f} img/s, "
                              f"streams busy {100 * shares[-1]:.1f}%")  # fmt: skip
        raw_median, e2e_median = statistics.median(raw), statistics.median(e2e)
        self.stdout.write(
            f"{embedder.key}: raw forward {raw_median:.1f} img/s, reindex end-to-end {e2e_median:.1f} img/s "
            f"({100 * e2e_median / raw_median:.0f}% of raw); forward passes fill "
            f"{100 * statistics.median(shares):.1f}% of {streams} stream(s) during the reindex; "
            f"decode+preprocess {decode_ms:.1f} ms/img on one thread"
        )
        return {"raw_img_per_s": raw, "reindex_img_per_s": e2e, "raw_median": raw_median,
                "reindex_median": e2e_median, "ratio": e2e_median / raw_median,
                "forward_share_of_reindex": shares, "decode_preprocess_ms_per_img": decode_ms}  # fmt: skip

    # -- latency ----------------------------------------------------------------------------------
    def _latency(self, space: str, trials: int, start_worker: bool) -> dict[str, Any]:
        worker = self._start_worker() if start_worker else None
        try:
            self._upload_until_searchable(space, seed=-1, timeout=180)  # warm-up: worker up, model loaded
            times = [self._upload_until_searchable(space, seed=trial, timeout=60) for trial in range(trials)]
        finally:
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=60)
        times.sort()
        median = statistics.median(times)
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
        self.stdout.write(f"{space}: upload to searchable, median {median * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
                          f"over {trials} uploads")  # fmt: skip
        return {"latency_s": times, "latency_median_s": median, "latency_p95_s": p95}

    def _upload_until_searchable(self, space: str, *, seed: int, timeout: float) -> float:
        """Seconds from the upload's commit until a search in ``space`` returns the new image first."""
        with transaction.atomic():
            product = catalog_services.product_create(title=f"Latency probe {seed}")
            image = catalog_services.product_image_add(product=product, file=_probe_image(seed))
        started = time.perf_counter()  # committed: the embedding task is on its way
        try:
            while time.perf_counter() - started < timeout:
                version = services.active_version(space)
                if version and ImageEmbedding.objects.filter(image=image, space=space, model_version=version.version,
                                                             status=EmbeddingStatus.OK).exists():  # fmt: skip
                    query = product_query_vector(product=product, space=space, version=version.version)
                    hits = similar_to_vector(vector=query, space=space, version=version, k=1)
                    if hits and hits[0].image_id == image.pk:
                        return time.perf_counter() - started
                time.sleep(0.005)
            raise CommandError(f"image {image.pk} was not searchable in {space} within {timeout:.0f} s; "
                               "is a worker running (or pass --start-worker)?")  # fmt: skip
        finally:
            catalog_services.product_delete(product=product)

    def _start_worker(self) -> subprocess.Popen[bytes]:
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
