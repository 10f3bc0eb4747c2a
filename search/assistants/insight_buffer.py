"""Search insight's writes, kept off the request: each process buffers the searches and clicks its responses
recorded, and one background thread writes them in batches.

Why: with synchronous web workers (gunicorn's default, what `make demo` runs) a row written in the response's
``close()`` holds the worker for its INSERT and commit before it takes the next request, so under load every
request queued a little longer (docs/assistants.md measured the search page's p95 about 10 % higher with recording
on). Now ``close()`` only appends to a list; every ``VITRINE_INSIGHT_FLUSH_S`` seconds (or sooner when
``BATCH`` searches are waiting) the thread writes them in one transaction whose commit does not wait for the disk
(``synchronous_commit`` off for that transaction only: a crash of the database may lose the last moment's search
statistics, never a product or anything else). With ``VITRINE_INSIGHT_FLUSH_S = 0`` there is no thread and each
response's record is written in its ``close()`` as before (the tests' setting: they read the rows at once).

A click can reach a process before its search is written (the search was answered by another worker whose batch
is still waiting, or sits in this same batch): clicks are applied after the batch's searches and a click whose
search is not there yet is tried again at the next flushes, for ``CLICK_PATIENCE_S``, then dropped (so is a
forged token: it never names a search). The buffer holds at most ``LIMIT`` searches; while the database cannot be
reached, newer ones are dropped and counted in the log, never kept without bound. On a clean exit (gunicorn's
``worker_exit``, ``atexit``) what is left is written.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction

from catalog.models import Product
from search.models import SearchEvent

logger = logging.getLogger(__name__)

BATCH = 200
LIMIT = 10_000
CLICK_PATIENCE_S = 60.0


@dataclass(frozen=True)
class Click:
    token: str
    product_id: int
    at: datetime
    until: float  # time.monotonic() after which a click whose search never showed up is dropped


class InsightBuffer:
    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked worker starts empty, without the parent's thread

    def _reset(self) -> None:
        self._lock = threading.Lock()  # guards the two lists
        self._flushing = threading.Lock()  # one flush at a time (the thread, an explicit flush, the exit)
        self._events: list[SearchEvent] = []
        self._clicks: list[Click] = []
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._dropped = 0

    # What the responses hand over (cheap: a list append under a lock).

    def add_event(self, event: SearchEvent) -> None:
        with self._lock:
            if len(self._events) >= LIMIT:
                self._dropped += 1
                return
            self._events.append(event)
            waiting = len(self._events)
        self._submitted(waiting)

    def add_click(self, *, token: str, product_id: int, at: datetime) -> None:
        with self._lock:
            if len(self._clicks) >= LIMIT:
                self._dropped += 1
                return
            self._clicks.append(Click(token, product_id, at, time.monotonic() + CLICK_PATIENCE_S))
        self._submitted(0)

    def _submitted(self, waiting: int) -> None:
        if self.interval() <= 0:
            self.flush()
            return
        self._start()
        if waiting >= BATCH:
            self._wake.set()

    @staticmethod
    def interval() -> float:
        return float(settings.VITRINE_INSIGHT_FLUSH_S)

    def pending(self) -> tuple[int, int]:
        with self._lock:
            return len(self._events), len(self._clicks)

    # Writing.

    def flush(self) -> int:
        """Write what is waiting, in the calling thread; returns how many searches and clicks it handled."""
        with self._flushing:
            with self._lock:
                events, self._events = self._events, []
                clicks, self._clicks = self._clicks, []
                dropped, self._dropped = self._dropped, 0
            if dropped:
                logger.warning("search insight: %d searches or clicks not recorded (the buffer was full)", dropped)
            self._write(events)
            waiting = self._apply(clicks)
            if waiting:
                with self._lock:
                    self._clicks[:0] = waiting
            return len(events) + len(clicks) - len(waiting)

    @staticmethod
    def _unhurried() -> None:
        with connection.cursor() as cursor:  # this transaction's commit does not wait for the WAL to reach the disk
            cursor.execute("SET LOCAL synchronous_commit TO OFF")

    def _write(self, events: list[SearchEvent]) -> None:
        if not events:
            return
        try:
            with transaction.atomic():
                self._unhurried()
                SearchEvent.objects.bulk_create(events, ignore_conflicts=True)
        except DatabaseError as exc:  # never a failed search for the sake of its statistics
            logger.warning("search insight: a batch of %d searches was not written (%s)", len(events), exc)

    def _apply(self, clicks: list[Click]) -> list[Click]:
        """Set each click on its search; return those whose search is not written yet (to try again)."""
        if not clicks:
            return []
        waiting: list[Click] = []
        now = time.monotonic()
        try:
            with transaction.atomic():
                self._unhurried()
                live = set(Product.objects.filter(pk__in={c.product_id for c in clicks}).values_list("pk", flat=True))
                for click in clicks:
                    if click.product_id not in live:
                        continue  # deleted since: nothing to point at
                    if SearchEvent.objects.filter(token=click.token, clicked_product__isnull=True).update(
                            clicked_product_id=click.product_id, clicked_at=click.at):  # fmt: skip
                        continue
                    if now < click.until and not SearchEvent.objects.filter(token=click.token).exists():
                        waiting.append(click)  # its search is still in some process's batch
        except DatabaseError as exc:
            logger.warning("search insight: a batch of %d clicks was not written (%s)", len(clicks), exc)
            return []
        return waiting

    # The background thread.

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._wake.clear()  # a stop's wake-up is not a reason for the new thread's first flush
            self._thread = threading.Thread(target=self._run, name="vitrine-insight", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._wake.wait(self.interval())
                self._wake.clear()
                try:
                    busy = self.flush()
                except Exception:
                    logger.exception("search insight: a batch could not be written")
                    busy = 0
                if not busy:
                    connections.close_all()  # idle: this thread holds no database connection
        finally:
            connections.close_all()

    def stop(self) -> None:
        """Stop the thread and write what is left (a worker's exit; tests)."""
        thread = self._thread
        self._stopping = True
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self._thread = None
        try:
            self.flush()
        except Exception:
            logger.exception("search insight: what was left could not be written")
        finally:
            self._stopping = False


buffer = InsightBuffer()
atexit.register(buffer.stop)
