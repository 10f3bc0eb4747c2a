"""Queues for workers on many machines: one ``embeddings`` queue, or one per space when asked."""

from __future__ import annotations

from config.celery import app


def _queue(name: str, args: tuple) -> str:
    return app.amqp.router.route({}, name, args=args, kwargs={})["queue"].name


def test_search_tasks_share_the_embeddings_queue_by_default(settings):
    settings.VITRINE_QUEUE_PER_SPACE = False
    assert _queue("search.tasks.image_embed_task", (1, "clip")) == "embeddings"
    assert _queue("search.tasks.reindex_job_task", (3,)) == "embeddings"


def test_per_space_queues_send_each_space_to_its_own_workers(settings):
    settings.VITRINE_QUEUE_PER_SPACE = True
    assert _queue("search.tasks.image_embed_task", (1, "clip")) == "embeddings.clip"
    assert _queue("search.tasks.images_embed_batch_task", ([1, 2], "cnn")) == "embeddings.cnn"
    assert _queue("search.tasks.product_embed_task", (5, "text")) == "embeddings.text"
    # Jobs and the sweep fan out into per-space tasks themselves; they stay on the shared queue.
    assert _queue("search.tasks.reindex_job_task", (3,)) == "embeddings"
    assert _queue("search.tasks.sweep_task", ()) == "embeddings"
