"""manage.py benchmark — embedding throughput, upload latency, search quality and search load, measured here.

* throughput (default): the model's forward pass alone vs ``images_embed_bulk`` end to end (decode,
  preprocess, forward, validation, DB upsert), same batch size, alternated ``--repeat`` times in this
  one process, medians reported;
* ``--latency N``: with a warm Celery worker, upload one image and wait until the space's
  nearest-neighbour search returns it; N times, median and p95;
* ``--search-quality``: recall@10 of "similar products" against an exact cosine scan (also with a
  same-category filter; ``--space hybrid``: its image search, its text search and its whole ranking), and how
  often photo search finds a catalogue image's own product first;
* ``--seed-synthetic N [--text-dim 384]``: fill an empty catalogue with N synthetic products and clustered vectors
  (and text-space vectors, for hybrid);
* ``--load-test``: gunicorn + locust (headless) on the similar-products API and product pages;
* ``--memory``: the resident memory of every web worker and Celery process (as ``make demo`` runs them) after
  warm-up and after a full reindex of the catalogue, their peak, and whether PyTorch is loaded in them;
* ``--runtimes``: per space (``--spaces``) and backend (``--backends``: eager torch, ONNX fp32, ONNX int8),
  img/s with decoding excluded and included, and p50/p95 of a text and a photo query's embedding, all in
  this one process with rounds interleaved; a table, and JSON with ``--json-out``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.models import ProductImage
from search.embedders import SpaceUnavailable
from search.indexing import versions
from search.lab.benchmarks import duplicates, load, memory, pipeline, quality, runtimes, stores, synthetic
from search.querying import similar
from search.querying.similar import HYBRID


class Command(BaseCommand):
    help = "Measure raw model throughput vs end-to-end reindex throughput, and upload-to-searchable latency."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--space", default="cnn", choices=[*settings.VITRINE_SPACES, HYBRID],
                            help="hybrid: with --search-quality, its searches and ranking.")  # fmt: skip
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
        parser.add_argument("--text-dim", type=int, default=0,
                            help="With --seed-synthetic: text vectors too, this dimension (hybrid).")  # fmt: skip
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
        parser.add_argument("--memory", action="store_true",
                            help="RSS of each web and Celery process after warm-up and after a full reindex "
                                 "(uses --web-workers).")  # fmt: skip
        runtime_args = parser.add_argument_group("inference runtimes (--runtimes)")
        runtime_args.add_argument("--runtimes", action="store_true", help="Compare torch / ONNX / int8 side by side.")
        runtime_args.add_argument("--spaces", default="cnn,clip,text", help="Comma-separated spaces for --runtimes.")
        runtime_args.add_argument("--backends", default=",".join(runtimes.BACKENDS),
                              help=f"Comma-separated, of {', '.join(runtimes.BACKENDS)}.")  # fmt: skip
        runtime_args.add_argument("--query-trials", type=int, default=50, help="Query embeddings timed per backend.")
        runtime_args.add_argument("--json-out", type=Path, help="Write the --runtimes figures here as JSON.")
        dup_args = parser.add_argument_group("near-duplicate detection (--duplicates)")
        dup_args.add_argument(
            "--duplicates",
            action="store_true",
            help="Precision and recall of duplicate detection per transformation of the pictures.",
        )
        dup_args.add_argument("--root", type=Path, default=Path("demo"), help="Catalogue folder (default demo).")
        dup_args.add_argument("--manifest", type=Path, help="Its manifest (default ROOT/manifest.csv if present).")
        dup_args.add_argument("--sample", type=int, default=80, help="Pictures transformed (default 80).")
        dup_args.add_argument(
            "--dup-spaces",
            default=",".join(settings.VITRINE_DUPLICATE_THRESHOLDS),
            help="Comma-separated image spaces to measure.",
        )
        store_args = parser.add_argument_group("vector stores (search.lab.benchmarks.stores)")
        store_args.add_argument("--stores", help="Compare vector stores on synthetic vectors: a comma list of "
                            "exact,pgvector,halfvec,milvus (milvus-lite),milvus-server (the embedded Milvus "
                                 "server; uses --dim and --queries, default 200).")  # fmt: skip
        store_args.add_argument("--n", type=int, default=100_000, help="How many vectors for --stores.")
        store_args.add_argument("--filter-selectivity", type=float, default=0.1,
                                help="Share of vectors the filter keeps.")  # fmt: skip
        store_args.add_argument("--ef", default=",".join(map(str, stores.EF_SWEEP)),
                            help="ef_search values to sweep, comma-separated.")  # fmt: skip
        store_args.add_argument("--recall-target", type=float, default=0.95)
        store_args.add_argument("--exact-queries", type=int, default=50, help="Queries for the exact scan (slow).")
        store_args.add_argument("--hnsw-m", type=int, default=stores.HNSW_M,
                            help="pgvector HNSW m for --stores (the shop's default unless given).")  # fmt: skip
        store_args.add_argument("--hnsw-ef-construction", type=int, default=stores.HNSW_EF_CONSTRUCTION)
        store_args.add_argument("--clients", default="",
                                help="Also QPS at the operating point with N concurrent clients: 1,2,8")  # fmt: skip
        store_args.add_argument("--reuse-milvus", action="store_true",
                            help="Resume: reuse the milvus-lite collection of an earlier run.")  # fmt: skip

    def handle(self, *args: Any, space: str, batch_size: int | None, images: int, repeat: int, latency: int,
               start_worker: bool, search_quality: bool, queries: int, seed_synthetic: int, dim: int,
               load_test: bool, users: int, duration: int, web_workers: int, scenario: str,
               during_reindex: str | None, json_path: Path | None,
               **options: Any) -> None:  # fmt: skip
        if options.get("stores"):
            self._stores(options, dim=dim, queries=queries or 200, json_path=json_path)
            return
        if options.get("duplicates"):
            root: Path = options["root"]
            manifest = options.get("manifest") or (root / "manifest.csv" if (root / "manifest.csv").exists() else None)
            found = duplicates.run(spaces=[s.strip() for s in options["dup_spaces"].split(",") if s.strip()],
                                   root=root, manifest=manifest, sample=options["sample"],
                                   thresholds=settings.VITRINE_DUPLICATE_THRESHOLDS, log=self.stderr.write,
                                   out=self.stdout.write)  # fmt: skip
            if json_path:
                json_path.write_text(json.dumps(found, indent=2, default=str))
            return
        figures: dict[str, Any] = {"cores": os.cpu_count()}
        if options.get("memory"):
            try:
                figures.update(memory.memory_benchmark(web_workers=web_workers, log=self.stderr.write))
            except memory.BenchmarkError as exc:
                raise CommandError(str(exc)) from exc
            for line in memory.format_table(figures):
                self.stdout.write(line)
            if json_path:
                json_path.write_text(json.dumps(figures, indent=2, default=str))
            return
        if options.get("runtimes"):
            self._runtimes(spaces=options["spaces"], backends=options["backends"], images=images,
                           batch_size=batch_size, repeat=max(1, repeat), trials=options["query_trials"],
                           json_out=options.get("json_out"))  # fmt: skip
            return
        batch_size = batch_size or 32
        search_modes = bool(search_quality or seed_synthetic or load_test)
        if seed_synthetic:
            started = time.perf_counter()
            figures["seed"] = synthetic.seed_synthetic(count=seed_synthetic, dimension=dim,
                                                       text_dimension=options.get("text_dim") or 0)  # fmt: skip
            self.stdout.write(f"seeded {seed_synthetic} synthetic products ({dim}-d) in "
                              f"{time.perf_counter() - started:.0f} s; index built in "
                              f"{figures['seed']['index_build_s']:.0f} s")  # fmt: skip
        if search_quality:
            image_space = similar.image_space_version().space if space == HYBRID else space
            figures["similar"] = quality.similar_recall(space=image_space, limit=queries or None)
            self.stdout.write(f"similar products vs exact: {figures['similar']}")
            if space == HYBRID:
                figures["hybrid"] = quality.hybrid_recall(limit=queries or None)
                self.stdout.write(f"hybrid vs exact: {figures['hybrid']}")
            try:
                figures["photo"] = quality.photo_self_retrieval(space=image_space, limit=queries or None)
            except SpaceUnavailable as exc:  # a synthetic catalogue's space has vectors but no model
                figures["photo"] = {"skipped": f"the {image_space} model is unavailable: {exc.reason}"}
            self.stdout.write(f"photo search, own product first: {figures['photo']}")
        if load_test:
            out = Path(settings.VITRINE_HOME) / "benchmarks" / "load"
            figures["load"] = load.load_test(
                users=users,
                duration=duration,
                web_workers=web_workers,
                out_dir=out,
                scenario=scenario,
                during_reindex=during_reindex,
                reindex_threads=options.get("reindex_threads") or 0,
            )
            for name, row in figures["load"].items():
                if isinstance(row, dict) and "p95_ms" in row:
                    self.stdout.write(f"{name}: p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms, "
                                      f"{row['rps']:.1f} req/s, {row['failures']} failures")  # fmt: skip
            for kind, row in figures["load"].get("vector_search", {}).items():
                postgres = (f"; Postgres p50 {row['postgres_p50_ms']:.1f} ms, p95 {row['postgres_p95_ms']:.1f} ms"
                            if "postgres_p50_ms" in row else "")  # fmt: skip
                self.stdout.write(f"vector search ({kind}, same run, {row['samples']} samples): store call p50 "
                                  f"{row['store_call_p50_ms']:.1f} ms, p95 {row['store_call_p95_ms']:.1f} ms"
                                  f"{postgres}")  # fmt: skip
            for name, ratio in figures["load"].get("ratios", {}).items():
                self.stdout.write(f"{name}: {ratio:.2f}")
        if repeat > 0 and not search_modes:
            embedder = versions.space_load(space)
            rows = list(ProductImage.objects.order_by("id")[: images or None])
            if not rows:
                raise CommandError("the catalogue has no images; import some first (make demo does)")
            figures.update(space=space, version=embedder.version, batch_size=batch_size, images=len(rows))
            figures.update(pipeline.raw_vs_reindex(embedder=embedder, rows=rows, batch_size=batch_size, repeat=repeat,
                                                   log=self.stdout.write, progress=self.stderr.write))  # fmt: skip
        if latency > 0:
            try:
                figures.update(pipeline.upload_to_searchable(space=space, trials=latency, start_worker=start_worker,
                                                             log=self.stdout.write))  # fmt: skip
            except pipeline.BenchmarkError as exc:
                raise CommandError(str(exc)) from exc
        if json_path:
            json_path.write_text(json.dumps(figures, indent=2, default=str))
        self.stdout.write(json.dumps(figures, indent=2, default=str))

    # -- inference runtimes (--runtimes) ----------------------------------------------------------------
    def _runtimes(self, *, spaces: str, backends: str, images: int, batch_size: int | None, repeat: int, trials: int,
                  json_out: Path | None) -> None:  # fmt: skip
        names = [b.strip() for b in backends.split(",") if b.strip()]
        keys = [k.strip() for k in spaces.split(",") if k.strip()]
        try:
            figures = runtimes.run(keys=keys, names=names, images=images, batch_size=batch_size, repeat=repeat,
                                   trials=trials)  # fmt: skip
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        for line in runtimes.format_table(figures, names):
            self.stdout.write(line)
        if json_out:
            json_out.write_text(json.dumps(figures, indent=2, default=str))
            self.stdout.write(f"figures written to {json_out}")

    # -- vector stores ---------------------------------------------------------------------------
    def _stores(self, options: dict[str, Any], *, dim: int, queries: int, json_path: Path | None) -> None:
        names = [name.strip() for name in str(options["stores"]).split(",") if name.strip()]
        try:
            figures = stores.run(
                stores=names, n=options["n"], dimension=dim, queries=queries,
                selectivity=options["filter_selectivity"], target=options["recall_target"],
                ef_sweep=[int(x) for x in str(options["ef"]).split(",")], exact_queries=options["exact_queries"],
                json_path=json_path, log=lambda line: self.stderr.write(line), reuse_milvus=options["reuse_milvus"],
                graph=stores.Graph(m=options["hnsw_m"], ef_construction=options["hnsw_ef_construction"]),
                clients=[int(x) for x in str(options["clients"] or "").split(",") if x.strip()],
            )  # fmt: skip
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{figures['n']} × {figures['dimension']}-d, {figures['queries']} queries, "
                          f"recall@10 target {figures['recall_target']}, "
                          f"filter keeps {figures['filter_selectivity']:.0%}")  # fmt: skip
        for line in stores.format_table(figures):
            self.stdout.write(line)
