"""The Celery app. Workers: ``celery -A config worker``."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import before_task_publish, worker_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("vitrine")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def ensure_embedded_broker() -> None:
    """Start the embedded Redis when no CELERY_BROKER_URL was given (no-op otherwise)."""
    from django.conf import settings

    if getattr(settings, "VITRINE_EMBEDDED_REDIS", False):
        from config import embedded

        embedded.redis(settings.VITRINE_HOME).ensure_running()


def split_cores(concurrency: int) -> int:
    """Intra-op threads per worker process so that processes × threads = cores (at least one each).

    Set once in the worker's main process, before the pool forks, so every child inherits it; torch and
    ONNX Runtime read it when a space loads (search.embedders.runtime.inference_threads). An explicit
    VITRINE_TORCH_THREADS wins.
    """
    from django.conf import settings

    threads = max(1, settings.VITRINE_CPUS // max(1, concurrency))
    os.environ.setdefault("VITRINE_TORCH_THREADS", str(threads))
    return int(os.environ["VITRINE_TORCH_THREADS"])


@worker_init.connect
def _worker_init(sender: Any = None, **_: Any) -> None:
    import logging

    from config.memory import malloc_arenas_limit

    malloc_arenas_limit()  # the pool processes fork from here and inherit it (config/memory.py)

    concurrency = int(getattr(sender, "concurrency", 0) or app.conf.worker_concurrency or 1)
    threads = split_cores(concurrency)
    logging.getLogger(__name__).info("worker: %d processes × %d inference threads", concurrency, threads)
    ensure_embedded_broker()


@before_task_publish.connect
def _before_publish(**_: Any) -> None:
    ensure_embedded_broker()


def _heartbeat(hostname: str) -> None:
    """Every 15 s, tell /readyz this worker is alive (a key that expires when it stops)."""
    import json
    import logging
    import time

    from config.health import HEARTBEAT_PREFIX, HEARTBEAT_TTL
    from config.ratelimit import redis_client

    while True:
        try:
            redis_client().set(f"{HEARTBEAT_PREFIX}{hostname}", json.dumps({"name": hostname, "at": time.time()}),
                               ex=HEARTBEAT_TTL)  # fmt: skip
        except Exception as exc:
            logging.getLogger(__name__).warning("worker heartbeat failed: %s", exc)
        time.sleep(15)


@worker_ready.connect
def _worker_ready(sender: Any = None, **_: Any) -> None:
    import threading

    threading.Thread(target=_heartbeat, args=(getattr(sender, "hostname", "worker"),), daemon=True,
                     name="vitrine-heartbeat").start()  # fmt: skip
    # The search app warms its models on this same signal (search/apps.py).
