"""gunicorn settings used by `make demo` and the benchmarks: `gunicorn -c python:config.gunicorn config.wsgi`.

With VITRINE_PRELOAD_QUERY_MODELS=true each worker loads the query-side models (text spaces and the primary image
space) in a background thread right after it starts: the worker answers at once (pages that embed nothing never
wait), and the first search waits only for what is still loading. Leave it off for processes that serve only
pages that embed nothing.

``--logger-class config.gunicorn.QuietLogger`` keeps the access log to requests that went wrong (4xx, 5xx):
a shop's log says what happened, not every thumbnail it served.
"""

import logging
import os
import threading
import time

from gunicorn.glogging import Logger


def _preload() -> None:
    from config.memory import malloc_release
    from search.querying.photo import preload_query_models

    started = time.monotonic()
    loaded = preload_query_models()
    malloc_release()  # what loading parsed and dropped, back to the system: each worker keeps only its models
    logging.getLogger("config.gunicorn").info("web worker %s: query models ready in %.1f s (%s)", os.getpid(),
                                              time.monotonic() - started, ", ".join(loaded) or "none")  # fmt: skip


def post_worker_init(worker: object) -> None:
    if os.environ.get("VITRINE_PRELOAD_QUERY_MODELS", "").lower() in {"1", "true", "yes"}:
        threading.Thread(target=_preload, name="vitrine-preload", daemon=True).start()


class QuietLogger(Logger):
    """gunicorn's logger, with an access log of the requests that did not succeed only."""

    def access(self, resp, req, environ, request_time) -> None:  # type: ignore[no-untyped-def]
        status = getattr(resp, "status_code", None)
        if status is None or int(status) >= 400:
            super().access(resp, req, environ, request_time)


def worker_exit(server: object, worker: object) -> None:
    """Write the searches this worker recorded and has not written yet (search.assistants.insight_buffer)."""
    import sys

    insight_buffer = sys.modules.get("search.assistants.insight_buffer")
    if insight_buffer is not None:
        insight_buffer.buffer.stop()
