"""Queueing work for the workers, and the receivers of the catalogue's signals that do it.

Tasks are sent by name (:data:`IMAGE_EMBED`…), so nothing here imports ``search.tasks``: tasks import
services, services never import tasks. ``search/tasks.py`` registers each task under the name declared here.

The catalogue announces its changes (``catalog.signals``); ``SearchConfig.ready()`` connects the ``on_*``
receivers below. Every one of them defers its work to ``transaction.on_commit``: a worker must find the rows,
and a rolled-back upload must queue nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q

from catalog.models import Product
from search import embedders
from search.models import SpaceState
from search.vectorstores import get_store

logger = logging.getLogger(__name__)

# Task names: the contract between this module and search/tasks.py (and workers of other releases).
IMAGE_EMBED = "search.tasks.image_embed_task"
IMAGES_EMBED_BATCH = "search.tasks.images_embed_batch_task"
PRODUCT_EMBED = "search.tasks.product_embed_task"
REINDEX_JOB = "search.tasks.reindex_job_task"
REINDEX_CHUNK = "search.tasks.reindex_chunk_task"
SWEEP = "search.tasks.sweep_task"
SPACES_PROBE = "search.tasks.spaces_probe_task"
PRODUCTS_SYNC = "search.tasks.products_sync_task"

# Tasks whose last positional argument is the space they compute in (see :func:`route`).
PER_SPACE = frozenset({IMAGE_EMBED, IMAGES_EMBED_BATCH, PRODUCT_EMBED})

RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}


def route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any) -> dict[str, str] | None:
    """Celery router (``CELERY_TASK_ROUTES``): search tasks go to ``embeddings``; with
    ``VITRINE_QUEUE_PER_SPACE`` an embedding task goes to ``embeddings.<space>`` instead, so GPU machines
    can consume ``embeddings.clip`` while CPU machines take ``embeddings.cnn`` and ``embeddings.text``."""
    if not name.startswith("search.tasks."):
        return None
    if settings.VITRINE_QUEUE_PER_SPACE and name in PER_SPACE:
        space = (kwargs or {}).get("space") or (args[-1] if args else None)
        if isinstance(space, str) and space:
            return {"queue": f"embeddings.{space}"}
    return {"queue": "embeddings"}


def send(name: str, *args: Any, **kwargs: Any) -> None:
    """Queue a task now; if the broker is down, log it and move on. Whatever the message was for is in the
    database either way, and the periodic sweep queues what has no vector, so no write ever fails for this."""
    try:
        current_app.send_task(name, args=args, kwargs=kwargs or None, retry=True, retry_policy=RETRY_POLICY)
    except Exception as exc:
        logger.warning("could not queue %s%s (the sweep will): %s", name, args, exc)


def send_on_commit(name: str, *args: Any) -> None:
    """Queue a task once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send(name, *args), robust=True)


# --- what a catalogue change means for the vectors ----------------------------------------------------


def image_index_later(*, image_id: int) -> None:
    """After the current transaction commits, embed the image in every enabled image space."""

    def enqueue() -> None:
        for space in embedders.image_spaces():
            send(IMAGE_EMBED, image_id, space)

    transaction.on_commit(enqueue, robust=True)


def image_reembed(*, image_id: int) -> dict[str, str]:
    """Staff asked to compute an image's vectors again: queue it in every enabled image space whose model can be
    loaded, replacing what is there. Returns per space "queued" or why not ("model unavailable: …")."""
    unavailable = SpaceState.objects.unavailable_reasons()
    outcome: dict[str, str] = {}
    for space in embedders.image_spaces():
        if space in unavailable:
            outcome[space] = f"model unavailable: {unavailable[space]}"
            continue
        send(IMAGE_EMBED, image_id, space, force=True)
        outcome[space] = "queued"
    return outcome


def product_index_later(*, product_id: int) -> None:
    """After commit, (re)embed the product's title and description in the text spaces."""

    def enqueue() -> None:
        for space in embedders.text_spaces():
            send(PRODUCT_EMBED, product_id, space)

    transaction.on_commit(enqueue, robust=True)


# A change to a few products (one admin save, a small bulk action) reaches the vector store's copy before the
# admin's next page; a bigger one (a category moved with thousands of products) goes to the worker in tasks
# of SYNC_TASK_CHUNK, so no request waits on it and no task outgrows its time limit.
SYNC_INLINE_MAX = 100
SYNC_TASK_CHUNK = 1000


def products_changed(*, product_ids: Sequence[int], text: bool = False) -> None:
    """Products' price, stock, category, publication, images or existence changed: after commit, bring the
    vector store's copy of them up to date. Only stores that keep such a copy (Milvus) have work to do;
    pgvector joins the live rows. Up to ``SYNC_INLINE_MAX`` products sync here, more are queued (as is a
    sync that fails: the store may be down); ``vectorstore_rebuild`` repairs anything at any time.
    ``text``: their category may have changed, and with it the text the text spaces embed."""
    if text:
        for product_id in product_ids:
            product_index_later(product_id=product_id)
    store = get_store()
    if not store.mirrors_catalog or not product_ids:
        return
    ids = sorted({int(pk) for pk in product_ids})

    def queue() -> None:
        for start in range(0, len(ids), SYNC_TASK_CHUNK):
            send(PRODUCTS_SYNC, ids[start : start + SYNC_TASK_CHUNK])

    def sync() -> None:
        if len(ids) > SYNC_INLINE_MAX:
            queue()
            return
        try:
            store.products_sync(product_ids=ids)
        except Exception as exc:
            logger.warning("vector store sync of products %s failed (queued to retry): %s", ids[:20], exc)
            queue()

    transaction.on_commit(sync, robust=True)


def category_changed(*, category_path: str) -> None:
    """A category was renamed or moved: its products (and its subcategories') changed path, and their text
    (the category's name is part of what text spaces embed; an unchanged text is skipped by the worker)."""
    ids = Product.objects.filter(Q(category__path=category_path) | Q(category__path__startswith=category_path + "/"))
    products_changed(product_ids=list(ids.values_list("pk", flat=True)), text=True)


# --- receivers of catalog.signals (connected in SearchConfig.ready) -----------------------------------


def on_image_added(sender: Any, *, image_id: int, **_: Any) -> None:
    image_index_later(image_id=image_id)


def on_product_text_changed(sender: Any, *, product_ids: Sequence[int], **_: Any) -> None:
    for product_id in product_ids:
        product_index_later(product_id=product_id)


def on_products_changed(sender: Any, *, product_ids: Sequence[int], **_: Any) -> None:
    # A product's category is part of its embedded text; re-embedding an unchanged text is skipped cheaply.
    products_changed(product_ids=product_ids, text=len(product_ids) <= SYNC_INLINE_MAX)


def on_category_changed(sender: Any, *, category_path: str, **_: Any) -> None:
    category_changed(category_path=category_path)
