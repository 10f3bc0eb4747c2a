"""Reindex jobs: staff (or the sweep) ask for a space to be recomputed; workers do it in chunks.

A job fixes the ids it covers when it starts, then plans id-range chunks of ``VITRINE_REINDEX_CHUNK`` as it
goes, keeping ``VITRINE_REINDEX_WINDOW`` of them queued; each finished chunk plans and queues the next.
Chunks are recorded as done once, so a redelivered chunk is harmless.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, QuerySet
from django.db.models.functions import Greatest
from django.utils import timezone

from catalog.models import Product, ProductImage
from search import embedders
from search.embedders import SpaceUnavailable
from search.indexing import enqueue
from search.indexing.bulk import images_embed_bulk, products_embed_bulk
from search.indexing.versions import (
    current_version,
    embeddings_with,
    space_load,
    version_activate_if_complete,
)
from search.models import EmbeddingStatus, ReindexChunk, ReindexJob, SpaceState

logger = logging.getLogger(__name__)


def products_reindex(*, product_ids: Sequence[int], requested_by: Any = None) -> list[ReindexJob]:
    """Staff asked to recompute these products' vectors in every enabled space whose model can be loaded (runs in
    the worker); a space whose model is unavailable would only fail the job."""
    unavailable = SpaceState.objects.unavailable_reasons()
    return [
        reindex_job_create(space=space, missing_only=False, product_ids=list(product_ids), requested_by=requested_by)
        for space in embedders.enabled()
        if space not in unavailable
    ]


def _job_selection(job: ReindexJob) -> QuerySet[Any]:
    """The ids a job covers, in id order: products for a text space, images otherwise.

    Up to ``job.upper_id`` once the job has started; ``missing_only`` is judged when each chunk is planned
    and again when it runs, so what finished meanwhile is not done twice.
    """
    rows: QuerySet[Any]
    if embedders.is_text_only(job.space):
        rows = Product.objects.all()
        if job.product_ids is not None:
            rows = rows.filter(pk__in=job.product_ids)
    else:
        rows = ProductImage.objects.all()
        if job.product_ids is not None:
            rows = rows.filter(product_id__in=job.product_ids)
        if job.missing_only:
            version = current_version(job.space) or space_load(job.space).version
            # NOT EXISTS on the image itself: walking the id index, a chunk's query stops after its ids.
            rows = rows.exclude(Exists(embeddings_with(job.space, version, EmbeddingStatus.OK, EmbeddingStatus.FAILED)))
    if job.upper_id is not None:
        rows = rows.filter(pk__lte=job.upper_id)
    return rows.order_by("pk").values_list("pk", flat=True)


def reindex_job_create(*, space: str, missing_only: bool = False, product_ids: list[int] | None = None,
                       requested_by: Any = None) -> ReindexJob:  # fmt: skip
    """Queue a reindex of one space (all images, missing ones, or some products' images)."""
    if space not in settings.VITRINE_SPACES:
        raise ValueError(f"unknown space {space!r}")
    user = requested_by if getattr(requested_by, "pk", None) else None
    job = ReindexJob.objects.create(space=space, missing_only=missing_only, product_ids=product_ids,
                                    requested_by=user)  # fmt: skip
    # With the broker down the job is still recorded, and the sweep queues it later (reindex_jobs_resume_stalled).
    transaction.on_commit(lambda: enqueue.send(enqueue.REINDEX_JOB, job.pk), robust=True)
    return job


def _job_fail(job: ReindexJob, reason: str) -> None:
    ReindexJob.objects.filter(pk=job.pk).update(status=ReindexJob.Status.FAILED, error=reason,
                                                finished_at=timezone.now())  # fmt: skip


def reindex_job_plan(*, job_id: int) -> ReindexJob:
    """Start a queued job: fix the ids it covers (up to the largest now) and count them; mark it running.

    Nothing is listed here: chunks are planned as the job goes (``reindex_job_queue_chunks``), so a job
    over hundreds of millions of images starts at once and keeps a window of chunk rows, not a list of
    every id. Safe to call again for the same job (a redelivered message): it starts once.
    """
    job = ReindexJob.objects.get(pk=job_id)
    if job.status != ReindexJob.Status.QUEUED:
        return job
    try:
        space_load(job.space)  # fail early, with the reason, when the model cannot be had
        selection = _job_selection(job)
        upper = selection.order_by("-pk").first()
        total, estimated = _job_size(selection.filter(pk__lte=upper)) if upper is not None else (0, False)
    except SpaceUnavailable as exc:
        _job_fail(job, exc.reason)
        job.refresh_from_db()
        return job
    now = timezone.now()
    ReindexJob.objects.filter(pk=job.pk, status=ReindexJob.Status.QUEUED).update(
        status=ReindexJob.Status.RUNNING, started_at=now, heartbeat_at=now, total=total, processed=0,
        upper_id=upper, cursor=None, planned_all=upper is None, total_estimated=estimated,
    )  # fmt: skip
    _job_finish_if_complete(job.pk)  # a job with nothing to do is done at once
    job.refresh_from_db()
    return job


def _job_size(selection: QuerySet[Any]) -> tuple[int, bool]:
    """(how many ids, whether that is an estimate). Counted exactly up to ``VITRINE_REINDEX_COUNT_MAX``;
    beyond, Postgres' planner estimates it: counting hundreds of millions of rows (an anti-join, for a
    missing-only job) could outlast the start task's time limit, and the job would never start."""
    limit = max(1, settings.VITRINE_REINDEX_COUNT_MAX)
    counted = selection[: limit + 1].count()
    if counted <= limit:
        return counted, False
    plan = json.loads(selection.explain(format="json"))
    return max(counted, int(plan[0]["Plan"]["Plan Rows"])), True


def _plan_next_chunk(job: ReindexJob) -> ReindexChunk | None:
    """The job's next chunk: the next ``VITRINE_REINDEX_CHUNK`` ids after the cursor. Call with the job's
    row locked (``select_for_update``); ``job`` is updated in memory and in the database. None: all planned."""
    if job.planned_all:
        return None
    size = max(1, settings.VITRINE_REINDEX_CHUNK)
    rows = _job_selection(job)
    if job.cursor is not None:
        rows = rows.filter(pk__gt=job.cursor)
    ids = list(rows[:size])
    if not ids:
        job.planned_all = True
        ReindexJob.objects.filter(pk=job.pk).update(planned_all=True)
        return None
    # Chunks are numbered 0, 1, 2… in the order they are planned (the last number: one index probe).
    last = ReindexChunk.objects.filter(job=job).order_by("-number").values_list("number", flat=True).first()
    number = 0 if last is None else last + 1
    chunk = ReindexChunk.objects.create(job=job, number=number, first_id=ids[0], last_id=ids[-1], size=len(ids))
    job.cursor = ids[-1]
    ReindexJob.objects.filter(pk=job.pk).update(cursor=job.cursor)
    return chunk


def reindex_chunk_run(*, chunk_id: int, queue_next: bool = False) -> ReindexChunk:
    """Embed one chunk of a job. Running a chunk twice stores the same vectors and counts once.

    ``queue_next`` (the worker's way): the chunk that records its completion plans and queues the next.
    """
    chunk = ReindexChunk.objects.select_related("job").get(pk=chunk_id)
    job = chunk.job
    if chunk.done_at is not None or job.status != ReindexJob.Status.RUNNING:
        return chunk
    try:
        ids = list(_job_selection(job).filter(pk__gte=chunk.first_id, pk__lte=chunk.last_id))
        if embedders.is_text_only(job.space):
            result = products_embed_bulk(space=job.space, product_ids=ids, missing_only=job.missing_only)
        else:
            result = images_embed_bulk(space=job.space, image_ids=ids, missing_only=job.missing_only)
    except SpaceUnavailable as exc:
        _job_fail(job, exc.reason)
        return chunk
    with transaction.atomic():
        first = ReindexChunk.objects.filter(pk=chunk.pk, done_at__isnull=True).update(
            done_at=timezone.now(), processed=chunk.size, failed=result.failed
        )
        if first:
            ReindexJob.objects.filter(pk=job.pk).update(processed=F("processed") + chunk.size,
                                                        failed=F("failed") + result.failed,
                                                        heartbeat_at=timezone.now())  # fmt: skip
    if first and queue_next:
        reindex_job_queue_chunks(job_id=job.pk, after=chunk.number)
    _job_finish_if_complete(job.pk)
    chunk.refresh_from_db()
    return chunk


def reindex_chunk_failed(*, chunk_id: int, reason: str) -> None:
    """A chunk hit an error that retrying will not fix: the job stops with the reason (staff can rerun it)."""
    chunk = ReindexChunk.objects.select_related("job").get(pk=chunk_id)
    logger.error("reindex job #%s failed in chunk %s: %s", chunk.job_id, chunk.number, reason)
    _job_fail(chunk.job, f"chunk {chunk.number}: {reason}"[:2000])


def _job_finish_if_complete(job_id: int) -> None:
    job = ReindexJob.objects.get(pk=job_id)
    if not job.planned_all or ReindexChunk.objects.filter(job_id=job_id, done_at__isnull=True).exists():
        return
    done = ReindexJob.objects.filter(pk=job_id, status=ReindexJob.Status.RUNNING)
    if job.total_estimated:  # now it is known
        updated = done.update(status=ReindexJob.Status.DONE, finished_at=timezone.now(), total=F("processed"),
                              total_estimated=False)  # fmt: skip
    else:  # counted at the start but not planned: deleted since, or (missing only) embedded meanwhile by uploads
        updated = done.update(status=ReindexJob.Status.DONE, finished_at=timezone.now(),
                              skipped=Greatest(F("total") - F("processed"), 0))  # fmt: skip
    if updated:
        version_activate_if_complete(space=job.space)


def reindex_job_pending_chunks(*, job_id: int) -> list[int]:
    """Ids of the job's planned chunks not yet done, in order."""
    pending = ReindexChunk.objects.filter(job_id=job_id, done_at__isnull=True).order_by("number")
    return list(pending.values_list("pk", flat=True))


def reindex_job_queue_chunks(*, job_id: int, after: int | None = None) -> int:
    """Keep ``VITRINE_REINDEX_WINDOW`` chunks of a running job in flight, planning new ones as needed.

    Called when the job starts and when its chunks stall (``after=None``: the pending chunks are queued
    again, their messages may be lost, and new ones planned up to the window) and by every chunk that
    finishes (``after``: its number; only newly planned chunks are queued). Only a short window is ever in
    the queue, so uploads queued meanwhile are embedded within a chunk's time, not after the job.
    Returns how many chunks were queued.
    """
    window = max(1, settings.VITRINE_REINDEX_WINDOW)
    with transaction.atomic():
        job = ReindexJob.objects.select_for_update().get(pk=job_id)  # one planner at a time per job
        if job.status != ReindexJob.Status.RUNNING:
            return 0
        pending = reindex_job_pending_chunks(job_id=job_id)
        planned: list[int] = []
        while len(pending) + len(planned) < window:
            chunk = _plan_next_chunk(job)
            if chunk is None:
                break
            planned.append(chunk.pk)
        ids = planned if after is not None else pending[:window] + planned

        def send_chunks() -> None:  # after commit: a worker must find the chunk rows
            for pk in ids:
                enqueue.send(enqueue.REINDEX_CHUNK, pk)

        transaction.on_commit(send_chunks, robust=True)
    if job.planned_all:
        _job_finish_if_complete(job_id)
    return len(ids)


def reindex_job_run(*, job_id: int) -> ReindexJob:
    """Run a job to the end in this process (tests, scripts); the worker runs the same steps as tasks."""
    job = reindex_job_plan(job_id=job_id)
    while job.status == ReindexJob.Status.RUNNING:
        pending = reindex_job_pending_chunks(job_id=job.pk)
        if not pending:
            with transaction.atomic():
                chunk = _plan_next_chunk(ReindexJob.objects.select_for_update().get(pk=job.pk))
            if chunk is None:
                _job_finish_if_complete(job.pk)
                job.refresh_from_db()
                break
            pending = [chunk.pk]
        for pk in pending:
            reindex_chunk_run(chunk_id=pk)
        job.refresh_from_db()
    return job


def reindex_jobs_resume_stalled(*, older_than_s: int | None = None) -> list[int]:
    """Queue again the jobs that stopped making progress: a running job's chunks, a queued job's start.

    A killed worker's chunk comes back by itself after the broker's visibility timeout; this catches
    messages that were lost outright (a broker that crashed before writing them to disk, or that was down
    when staff asked for the job). The sweep leaves a space to its active job, so no job may stay stuck.
    """
    age = older_than_s if older_than_s is not None else settings.VITRINE_REINDEX_STALL_S
    before = timezone.now() - timedelta(seconds=age)
    resumed = []
    for job in ReindexJob.objects.filter(status=ReindexJob.Status.QUEUED, created_at__lt=before):
        # Starting is idempotent (reindex_job_plan starts a job once), so a duplicate message is harmless.
        enqueue.send(enqueue.REINDEX_JOB, job.pk)
        resumed.append(job.pk)
        logger.warning("reindex job #%s was still waiting to start after %s s; queued it again", job.pk, age)
    for job in ReindexJob.objects.filter(status=ReindexJob.Status.RUNNING, heartbeat_at__lt=before):
        ReindexJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())
        if reindex_job_queue_chunks(job_id=job.pk):
            resumed.append(job.pk)
            logger.warning("reindex job #%s made no progress for %s s; queued its next chunks again", job.pk, age)
    return resumed
