"""A shop's log says what happened, not every request: gunicorn's access log keeps failures only."""

from __future__ import annotations

import datetime
import logging
from types import SimpleNamespace

from gunicorn.config import Config

from config.gunicorn import QuietLogger


def test_the_access_log_keeps_only_requests_that_went_wrong():
    """`make demo`'s gunicorn logs a failed request, not every page and thumbnail it served."""
    config = Config()
    config.set("accesslog", "-")
    log = QuietLogger(config)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    log.access_log.addHandler(handler)
    path = "/media/products/thumbs/x.jpg"
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": path, "PATH_INFO": path, "QUERY_STRING": "",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}  # fmt: skip
    request = SimpleNamespace(headers=[], method="GET", path=path, query="", version=(1, 1), uri=path)
    for status in (200, 304, 404, 500):
        response = SimpleNamespace(status=f"{status} X", status_code=status, headers=[], sent=10, response_length=10)
        log.access(response, request, environ, datetime.timedelta(seconds=0.01))
    assert len(seen) == 2 and '" 404 ' in seen[0] and '" 500 ' in seen[1]
