"""gunicorn settings used by `make demo` and the load benchmark: `gunicorn -c python:config.gunicorn config.wsgi`.

With VITRINE_PRELOAD_QUERY_MODELS=true each worker loads the query-side models (text spaces and
the primary image space) right after it starts, so no shopper waits for a model to load and no
sync worker stalls behind one. Leave it off for processes that serve only pages that embed nothing.
"""

import os


def post_worker_init(worker: object) -> None:
    if os.environ.get("VITRINE_PRELOAD_QUERY_MODELS", "").lower() in {"1", "true", "yes"}:
        from search.querying.photo import preload_query_models

        preload_query_models()
