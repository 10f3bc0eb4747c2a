"""Workers killed with SIGKILL in the middle of an embedding, and a broker restarted with work queued.

Each test runs real workers on the embedded Redis and the test database; the ``stall`` space
(tests/search/stalling.py) makes "mid-embedding" a fact, not a race: the first batch announces
itself in a file and then waits to be killed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog import services as catalog_services
from search.indexing import jobs
from search.models import ImageEmbedding, ReindexJob
from tests.imagefactory import image_bytes
from tests.search.workers import Worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stall_space(settings, tmp_path: Path) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """The ``stall`` space, enabled alone, in this process and (through the environment) in workers."""
    from search import embedders

    files = {"MARKER": str(tmp_path / "stalled.pid"), "LOG": str(tmp_path / "batches.log")}
    spaces = {"stall": {"BACKEND": "tests.search.stalling.StallingPixelsEmbedder", "OPTIONS": files}}
    settings.VITRINE_SPACES = {**settings.VITRINE_SPACES, **spaces}
    settings.VITRINE_ENABLED_SPACES = ["stall"]
    embedders._instances.pop("stall", None)
    yield {"VITRINE_SPACES_EXTRA": json.dumps(spaces), **files}
    embedders._instances.pop("stall", None)


def _stalled_pid(marker: str) -> int:
    wait_for(lambda: Path(marker).exists() and Path(marker).read_text(), 60, "the first batch to start")
    return int(Path(marker).read_text())


def _finished_batches(log: str) -> list[tuple[int, int]]:
    if not Path(log).exists():
        return []
    return [(int(pid), int(n)) for pid, n in (line.split() for line in Path(log).read_text().splitlines())]


def test_pool_process_killed_mid_embedding_the_image_still_gets_one_vector(settings, _media_root, stall_space):
    worker = Worker(home=settings.VITRINE_HOME, media_root=_media_root, spaces="stall", pool="prefork",
                    env={"VITRINE_SPACES_EXTRA": stall_space["VITRINE_SPACES_EXTRA"]})  # fmt: skip
    try:
        product = catalog_services.product_create(title="Kettle")
        image = catalog_services.product_image_add(product=product, file=image_bytes(size=(90, 60)))
        child = _stalled_pid(stall_space["MARKER"])
        assert child != worker.process.pid  # a pool process, not the worker itself
        os.kill(child, signal.SIGKILL)
        # The worker sees its pool process die and hands the message back at once (reject_on_worker_lost).
        wait_for(lambda: ImageEmbedding.objects.filter(image=image, space="stall", status="ok").exists(), 60)
        rows = ImageEmbedding.objects.filter(image=image)
        assert rows.count() == 1 and rows.get().space == "stall"
        assert [pid for pid, _ in _finished_batches(stall_space["LOG"])] != [child]
        assert "WorkerLostError" in worker.output or "signal 9" in worker.output
    finally:
        worker.stop()


def test_worker_killed_mid_reindex_another_worker_finishes_the_job_each_image_once(
    settings, _media_root, stall_space
):  # fmt: skip
    settings.VITRINE_REINDEX_CHUNK = 2
    # Uploads made with no worker running: their messages are purged below, so only the job embeds.
    images = []
    for n in range(5):
        product = catalog_services.product_create(title=f"Lamp {n}")
        file = image_bytes(size=(80, 64), color=(40 * n, 90, 200 - 30 * n))
        images.append(catalog_services.product_image_add(product=product, file=file))
    env = {"VITRINE_SPACES_EXTRA": stall_space["VITRINE_SPACES_EXTRA"], "VITRINE_REINDEX_CHUNK": "2",
           "VITRINE_TASK_VISIBILITY_TIMEOUT_S": "5"}  # fmt: skip
    first = Worker(home=settings.VITRINE_HOME, media_root=_media_root, spaces="stall", env=env, name="first")
    try:
        job = jobs.reindex_job_create(space="stall")
        _stalled_pid(stall_space["MARKER"])
        job.refresh_from_db()
        # Chunks are planned a window (2) ahead of the workers, not all at the start.
        assert job.status == "running" and job.chunks.count() == 2 and job.total == 5
        first.kill()  # the whole worker: nobody is left to hand the message back
    finally:
        first.stop()
    killed_at = time.monotonic()
    time.sleep(5.5)  # past the visibility timeout: the broker may hand the chunk out again
    second = Worker(home=settings.VITRINE_HOME, media_root=_media_root, spaces="stall", env=env, purge=False,
                    name="second")  # fmt: skip
    try:
        wait_for(lambda: ReindexJob.objects.get(pk=job.pk).status == "done", 90, "the job to finish")
    finally:
        second.stop()
    recovered_in = time.monotonic() - killed_at
    job.refresh_from_db()
    assert job.processed == job.total == 5 and job.failed == 0
    assert job.chunks.count() == 3 and job.chunks.filter(done_at__isnull=True).count() == 0
    for image in images:
        rows = ImageEmbedding.objects.filter(image=image, space="stall")
        assert rows.count() == 1 and rows.get().status == "ok"
    batches = _finished_batches(stall_space["LOG"])
    assert sum(n for _, n in batches) == 5  # every image computed once after the kill, none twice
    assert recovered_in < 60


def test_every_task_ends_before_the_broker_would_hand_it_out_again(settings):
    from config.celery import app

    timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    ours = {name: task for name, task in app.tasks.items() if name.startswith("search.")}
    assert ours
    for name, task in ours.items():
        assert task.time_limit and task.time_limit < timeout, name
        assert task.acks_late and task.reject_on_worker_lost, name


def test_messages_queued_before_redis_crashes_are_consumed_after_it_restarts(settings, _media_root):
    from config import embedded

    settings.VITRINE_ENABLED_SPACES = ["pixels"]
    Worker(home=settings.VITRINE_HOME, media_root=_media_root, spaces="pixels").stop()  # purge leftovers
    images = []
    for n in range(4):  # queued while no worker runs
        product = catalog_services.product_create(title=f"Mug {n}")
        images.append(catalog_services.product_image_add(product=product, file=image_bytes(color=(60 * n, 20, 90))))
    redis_server = embedded.redis(settings.VITRINE_HOME)
    pid = int(redis_server.pidfile.read_text())
    os.kill(pid, signal.SIGKILL)  # a crash, not a clean shutdown
    wait_for(lambda: not redis_server.is_running(), 10, "Redis to die")
    started = time.monotonic()
    # The worker starts the embedded Redis again, which replays its append-only file.
    worker = Worker(home=settings.VITRINE_HOME, media_root=_media_root, spaces="pixels", purge=False)
    try:
        wait_for(lambda: ImageEmbedding.objects.filter(image__in=images, status="ok").count() == 4, 30,
                 "the queued images")  # fmt: skip
    finally:
        worker.stop()
    assert time.monotonic() - started < 30
    assert ImageEmbedding.objects.filter(image__in=images).count() == 4  # one vector each
