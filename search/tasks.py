"""Thin Celery tasks: ids in, a service call, retries and limits owned here.

All run on the ``embeddings`` queue (see CELERY_TASK_ROUTES). They are
idempotent upserts, acknowledged late and re-queued if a worker dies mid-task:
at once when a pool process dies, and after the broker's visibility timeout
(``VITRINE_TASK_VISIBILITY_TIMEOUT_S``) when the whole worker does. Every hard
time limit here stays below that timeout, so a task still running is never
handed out twice; long work (reindex jobs) is cut into short chunks.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Retry
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError

from search.assistants import duplicates
from search.embedders import SpaceUnavailable
from search.indexing import bulk, embedding, enqueue, jobs, sweep, versions
from search.vectorstores import get_store

logger = logging.getLogger(__name__)

# Errors worth retrying: the database or the broker hiccupped.
TRANSIENT = (OperationalError, InterfaceError, ConnectionError, TimeoutError)
COMMON: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
}


def _retry(task: Task, exc: BaseException, **options: Any) -> Retry:
    """``task.retry()`` after the task's own backoff. Celery applies ``retry_backoff`` only to ``autoretry_for``:
    an explicit retry waits ``default_retry_delay`` (180 s) unless given a countdown, so a database blip held
    every task for three minutes. Here: 0-2 s, then 0-4 s, 0-8 s… up to ``retry_backoff_max`` (full jitter)."""
    countdown = get_exponential_backoff_interval(
        factor=int(task.retry_backoff), retries=task.request.retries, maximum=task.retry_backoff_max,
        full_jitter=task.retry_jitter,
    )  # fmt: skip
    # Celery's own "Retry in" line is on the quiet task log; an outage is worth a warning by default.
    said = str(exc).strip()
    logger.warning("%s[%s] will retry in %d s (attempt %d): %s", task.name, task.request.id, countdown,
                   task.request.retries + 1, said.splitlines()[0] if said else type(exc).__name__)  # fmt: skip
    return task.retry(exc=exc, countdown=countdown, **options)


def _max_retries() -> int:
    return max(0, settings.VITRINE_EMBED_MAX_ATTEMPTS - 1)


@shared_task(name=enqueue.IMAGE_EMBED, **COMMON, soft_time_limit=120, time_limit=180, max_retries=None)
def image_embed_task(self: Task, image_id: int, space: str, force: bool = False) -> str:
    """Embed one image in one space (again, with ``force``). Retries with backoff; after the last attempt the
    image stays failed."""
    try:
        return embedding.image_embed(image_id=image_id, space=space, force=force)
    except TRANSIENT as exc:
        raise _retry(self, exc, max_retries=_max_retries() + 3) from exc
    except (DatabaseError, embedding.InvalidVector, RuntimeError, ValueError, MemoryError) as exc:
        embedding.image_embed_failed(image_id=image_id, space=space, reason=f"{type(exc).__name__}: {exc}")
        if self.request.retries >= _max_retries():
            return "failed"
        raise _retry(self, exc, max_retries=_max_retries()) from exc


@shared_task(name=enqueue.IMAGES_EMBED_BATCH, **COMMON, soft_time_limit=900, time_limit=960, max_retries=5)
def images_embed_batch_task(self: Task, image_ids: list[int], space: str) -> int:
    """Embed a batch of images (the sweep queues these)."""
    try:
        processed = bulk.images_embed_bulk(space=space, image_ids=image_ids, missing_only=True).processed
    except SpaceUnavailable:
        return 0
    except TRANSIENT as exc:
        raise _retry(self, exc) from exc
    # What the upload path missed, its near-duplicates included (never fails the batch: it logs).
    duplicates.duplicates_after_bulk(image_ids=image_ids, space=space)
    return processed


@shared_task(name=enqueue.PRODUCT_EMBED, **COMMON, soft_time_limit=60, time_limit=90, max_retries=5)
def product_embed_task(self: Task, product_id: int, space: str) -> str:
    try:
        return embedding.product_embed(product_id=product_id, space=space)
    except TRANSIENT as exc:
        raise _retry(self, exc) from exc


@shared_task(name=enqueue.REINDEX_JOB, **COMMON, soft_time_limit=300, time_limit=360, max_retries=3)
def reindex_job_task(self: Task, job_id: int) -> str:
    """Start a job and queue its first chunks; each chunk plans and queues the next when it finishes."""
    try:
        job = jobs.reindex_job_plan(job_id=job_id)
    except TRANSIENT as exc:
        raise _retry(self, exc) from exc
    if job.status == "running":
        jobs.reindex_job_queue_chunks(job_id=job.pk)
    return job.status


@shared_task(name=enqueue.REINDEX_CHUNK, **COMMON, soft_time_limit=900, time_limit=960, max_retries=5)
def reindex_chunk_task(self: Task, chunk_id: int) -> str:
    try:
        chunk = jobs.reindex_chunk_run(chunk_id=chunk_id, queue_next=True)
    except TRANSIENT as exc:
        raise _retry(self, exc) from exc
    except Exception as exc:  # a bug or a model that crashes: stop the job with the reason, don't loop
        jobs.reindex_chunk_failed(chunk_id=chunk_id, reason=f"{type(exc).__name__}: {exc}")
        return "failed"
    return "done" if chunk.done_at else "skipped"


@shared_task(name=enqueue.SWEEP, **COMMON, soft_time_limit=300, time_limit=360, max_retries=3)
def sweep_task(self: Task) -> dict[str, int]:
    try:
        return sweep.sweep()
    except TRANSIENT as exc:
        raise _retry(self, exc) from exc


@shared_task(name=enqueue.SPACES_PROBE, **COMMON, soft_time_limit=600, time_limit=660, max_retries=6)
def spaces_probe_task(self: Task) -> dict[str, str]:
    """Load every enabled space in this worker (warming it) and record which are available. A worker that
    starts while the database is down tries again with the backoff instead of failing with a traceback."""
    try:
        return versions.spaces_prepare(log=lambda line: None)  # the admin shows the outcome; the log stays quiet
    except TRANSIENT as exc:
        raise _retry(self, exc) from exc


@shared_task(name=enqueue.PRODUCTS_SYNC, **COMMON, soft_time_limit=120, time_limit=180, max_retries=8)
def products_sync_task(self: Task, product_ids: list[int]) -> None:
    """Retry a vector-store sync of products' filter fields that failed when it was first tried."""
    try:
        get_store().products_sync(product_ids=product_ids)
    except Exception as exc:
        raise _retry(self, exc) from exc
