"""Memory of the shop's processes (``benchmark --memory``): the resident set of every web worker and Celery
process after warm-up and after a full reindex of the catalogue, their peak, and whether PyTorch is loaded.

The processes are the ones ``make demo`` runs (config.processes): gunicorn with its query models preloaded and
a Celery worker with one pool process, started here on this home's catalogue and stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings
from django.utils import timezone

from catalog.models import Product, ProductImage
from config.health import wait_until_answers
from config.processes import Child, web_command, worker_command
from search import embedders
from search.indexing import jobs
from search.models import ReindexJob, SpaceState

QUERIES = ["red mug", "guitar", "a warm winter hat", "laptop", "something to drink"]


class BenchmarkError(RuntimeError):
    """The measurement could not be made; ``str()`` says why."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_memory(process: psutil.Process) -> dict[str, Any]:
    """RSS now and at its peak (VmHWM), what only this process holds (USS: RSS less the pages it shares with the
    others, such as mapped model weights and libraries), in MB, and which heavy runtimes are mapped into it."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    peak_kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    maps = Path(f"/proc/{process.pid}/maps").read_text()
    full = process.memory_full_info()
    return {"pid": process.pid, "rss_mb": round(full.rss / 2**20), "uss_mb": round(full.uss / 2**20),
            "peak_mb": round(peak_kb / 1024), "torch": "libtorch" in maps,
            "onnxruntime": "onnxruntime" in maps}  # fmt: skip


def snapshot(web: Child, worker: Child) -> dict[str, dict[str, Any]]:
    """Every process of the shop by role: ``web master``, ``web worker 1``…, ``worker main``, ``worker pool 1``…"""
    roles: dict[str, dict[str, Any]] = {}
    for child, leader, member in ((web, "web master", "web worker"), (worker, "worker main", "worker pool")):
        processes = sorted(child.members(), key=lambda p: p.pid)
        roles[leader] = process_memory(next(p for p in processes if p.pid == child.pid))
        for n, process in enumerate((p for p in processes if p.pid != child.pid), start=1):
            roles[f"{member} {n}"] = process_memory(process)
    return roles


def _exercise(url: str, photo: bytes, rounds: int) -> None:
    """What shoppers do, enough times to reach every web worker: pages, text and photo searches, similar products.

    Errors are answers too (a 409 while nothing is indexed yet): memory is what is measured here.
    """
    slugs = list(Product.objects.published().values_list("slug", flat=True)[:rounds])
    ids = list(Product.objects.published().values_list("pk", flat=True)[:rounds])
    boundary = uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="photo.jpg"\r\n\r\n'
    body = head.encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    for i in range(rounds):
        query = QUERIES[i % len(QUERIES)].replace(" ", "+")
        paths = ["", "products/", f"products/{slugs[i % len(slugs)]}/", f"search/?q={query}", f"api/search?q={query}",
                 f"api/products/{ids[i % len(ids)]}/similar"]  # fmt: skip
        requests = [urllib.request.Request(url + path) for path in paths]
        requests.append(
            urllib.request.Request(
                url + "api/search/image",
                data=body,
                method="POST",
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
        )
        for request in requests:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(request, timeout=120).read()


def _wait_for_probe(since: Any, timeout: float = 600) -> None:
    """The worker loads every enabled space when it starts (spaces_probe_task): wait until it has."""
    deadline = time.monotonic() + timeout
    keys = embedders.enabled()
    while SpaceState.objects.filter(key__in=keys, checked_at__gte=since).count() < len(keys):
        if time.monotonic() > deadline:
            raise BenchmarkError(f"the worker did not load its models within {timeout:.0f} s")
        time.sleep(1)


def memory_benchmark(*, web_workers: int = 2, rounds: int = 20, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Start the shop's processes, warm them up, measure; reindex every available space, measure again."""
    image = ProductImage.objects.order_by("id").first()
    if image is None:
        raise BenchmarkError("the catalogue has no images; import the demo catalogue first (make demo does)")
    photo = Path(settings.MEDIA_ROOT, str(image.file.name)).read_bytes()
    database = settings.DATABASES["default"]
    env = {**os.environ, "VITRINE_HOME": str(settings.VITRINE_HOME), "PYTHONUNBUFFERED": "1",
           # The catalogue this process reads: its database and media, whatever the environment said.
           "VITRINE_DB_NAME": str(database["NAME"]), "VITRINE_MEDIA_ROOT": str(settings.MEDIA_ROOT),
           "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.local"),
           "VITRINE_RATE_LIMIT_SEARCH": "0", "VITRINE_RATE_LIMIT_PHOTO": "0"}  # fmt: skip
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    started = timezone.now()
    worker = Child("worker", worker_command(hostname=f"bench-memory-{os.getpid()}@%h", loglevel="WARNING"), env=env,
                   cwd=settings.BASE_DIR, echo=lambda line: log(f"[worker] {line}"))  # fmt: skip
    web = Child("web", web_command(host="127.0.0.1", port=port, workers=web_workers, access_log="off"),
                env={**env, "VITRINE_PRELOAD_QUERY_MODELS": "true", "VITRINE_TORCH_THREADS": "1"},
                cwd=settings.BASE_DIR, echo=lambda line: log(f"[web] {line}"))  # fmt: skip
    figures: dict[str, Any] = {"web_workers": web_workers, "images": ProductImage.objects.count()}
    try:
        worker.start()
        web.start()
        if not wait_until_answers(url, timeout=600):
            raise BenchmarkError(f"the web server did not answer at {url}")
        _wait_for_probe(started)
        _exercise(url, photo, rounds)
        time.sleep(2)
        figures["after_warm_up"] = snapshot(web, worker)
        log("warmed up; reindexing every available space …")
        spaces = [s for s in embedders.enabled() if SpaceState.objects.filter(key=s, available=True).exists()]
        queued = [jobs.reindex_job_create(space=space, missing_only=False) for space in spaces]
        _wait_for_jobs([job.pk for job in queued], log)
        _exercise(url, photo, rounds)
        time.sleep(2)
        figures["after_reindex"] = snapshot(web, worker)
        figures["reindexed"] = spaces
    finally:
        web.stop()
        worker.stop()
    return figures


def _wait_for_jobs(ids: list[int], log: Callable[[str], None], timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    said = time.monotonic()
    while True:
        rows = list(ReindexJob.objects.filter(pk__in=ids))
        if all(job.status in (ReindexJob.Status.DONE, ReindexJob.Status.FAILED) for job in rows):
            failed = [f"{job.space}: {job.error}" for job in rows if job.status == ReindexJob.Status.FAILED]
            if failed:
                raise BenchmarkError(f"reindex failed: {'; '.join(failed)}")
            return
        if time.monotonic() > deadline:
            raise BenchmarkError(f"the reindex did not finish within {timeout:.0f} s")
        if time.monotonic() - said > 10:
            log("  " + ", ".join(f"{job.space} {job.progress}" for job in rows))
            said = time.monotonic()
        time.sleep(1)


def format_table(figures: dict[str, Any]) -> list[str]:
    """One row per process: RSS after warm-up, after the reindex, its peak, and what heavy runtimes it maps."""
    after = figures.get("after_reindex", {})
    lines = [f"{'process':16} {'warm MB':>8} {'reindexed MB':>13} {'peak MB':>8} {'own MB':>7}  torch  onnxruntime"]
    for role, warm in figures.get("after_warm_up", {}).items():
        later = after.get(role, {})
        torch = "yes" if later.get("torch", warm["torch"]) else "no"
        ort = "yes" if later.get("onnxruntime", warm["onnxruntime"]) else "no"
        lines.append(f"{role:16} {warm['rss_mb']:>8} {later.get('rss_mb', '-'):>13} "
                     f"{later.get('peak_mb', warm['peak_mb']):>8} {later.get('uss_mb', warm['uss_mb']):>7}  "
                     f"{torch:5}  {ort}")  # fmt: skip
    lines.append(
        'MB are RSS (resident); "own" is USS, what the process does not share with the others '
        "(mapped model weights and libraries are shared)."
    )
    return lines
