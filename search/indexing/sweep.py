"""The periodic sweep (Celery beat): queue what the upload path missed, resume jobs that stalled, tune the search
breadth again where a version has grown by half since it was tuned."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, QuerySet

from catalog.models import Product
from search import embedders
from search.assistants import insight
from search.embedders import SpaceUnavailable
from search.indexing import enqueue
from search.indexing.jobs import reindex_job_create, reindex_jobs_resume_stalled
from search.indexing.tuning import retune_grown
from search.indexing.versions import current_version, missing_images, space_load
from search.models import ProductEmbedding, ReindexJob

logger = logging.getLogger(__name__)


def _full_job_active(space: str) -> bool:
    """A queued or running reindex job over the whole space: it covers whatever the sweep would queue."""
    active = [ReindexJob.Status.QUEUED, ReindexJob.Status.RUNNING]
    return ReindexJob.objects.filter(space=space, product_ids__isnull=True, status__in=active).exists()


def sweep(*, spaces: Sequence[str] | None = None, batch: int = 64) -> dict[str, int]:
    """Queue embedding for images (and product texts) whose vectors are missing or stale.

    "Missing or stale" is judged against the version each space computes now. Spaces
    that never loaded anywhere are probed here first so their version is known.
    Failures are not retried by the sweep; staff reindex them on purpose.

    Each run looks at no more than ``VITRINE_SWEEP_MAX`` ids per space. A bigger backlog (a new model
    version, a bulk import while the worker was down) becomes one missing-only reindex job, chunked,
    resumable and shown in the admin, and later runs leave the space to that job while it is active:
    the sweep never lists a whole catalogue in one process nor queues the same backlog twice.
    Returns per space the ids queued; more than ``VITRINE_SWEEP_MAX`` means a job took the backlog over.
    """
    limit = max(1, settings.VITRINE_SWEEP_MAX)
    queued: dict[str, int] = {}
    for space in spaces or embedders.enabled():
        if _full_job_active(space):
            queued[space] = 0
            continue
        version = current_version(space)
        if version is None:
            try:
                version = space_load(space).version
            except SpaceUnavailable:
                queued[space] = 0
                continue
        is_text = embedders.is_text_only(space)
        stale: QuerySet[Any]
        if is_text:
            stale = Product.objects.exclude(Exists(ProductEmbedding.objects.filter(
                product=OuterRef("pk"), space=space, model_version=version)))  # fmt: skip
        else:
            stale = missing_images(space, version)
        ids = list(stale.order_by("pk").values_list("pk", flat=True)[: limit + 1])
        queued[space] = len(ids)
        if len(ids) > limit:
            job = reindex_job_create(space=space, missing_only=True)
            logger.info("sweep: more than %s %s lack a %s vector; reindex job #%s takes them over", limit,
                        "products" if is_text else "images", space, job.pk)  # fmt: skip
        elif is_text:
            for pk in ids:
                enqueue.send(enqueue.PRODUCT_EMBED, pk, space)
        else:
            for start in range(0, len(ids), batch):
                enqueue.send(enqueue.IMAGES_EMBED_BATCH, ids[start : start + batch], space)
    reindex_jobs_resume_stalled()
    retune_grown()  # a search breadth measured on half the vectors may no longer reach its recall target
    if spaces is None:  # the periodic sweep, not staff's "sweep these spaces"
        purged = insight.purge()
        if purged:
            logger.info("sweep: deleted %d recorded searches older than the retention", purged)
    return queued
