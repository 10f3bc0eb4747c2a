"""Real Celery workers for the tests, on the test database and the embedded Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float = 90.0, what: str = "the worker") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def take_queued() -> list[tuple[str, list[Any]]]:
    """Empty the embeddings queue of the real broker: (task name, arguments) of each message that was in it."""
    from config.celery import app, ensure_embedded_broker

    ensure_embedded_broker()
    found = []
    with app.connection_for_read() as broker:
        queue = broker.SimpleQueue("embeddings")
        try:
            while True:
                message = queue.get(block=False)
                message.ack()
                found.append((message.headers.get("task"), message.decode()[0]))
        except queue.Empty:
            pass
        finally:
            queue.close()
    return found


class Worker:
    """``celery worker`` in its own process group (so a test can kill it and its pool at once)."""

    def __init__(self, *, home: Path, media_root: Path, spaces: str, pool: str = "solo", purge: bool = True,
                 env: dict[str, str] | None = None, name: str = "pipeline") -> None:  # fmt: skip
        environ = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "VITRINE_DB_NAME": connection.settings_dict["NAME"],  # the test database
            "VITRINE_MEDIA_ROOT": str(media_root),
            "VITRINE_ENABLED_SPACES": spaces,
            "VITRINE_HOME": str(home),
            **(env or {}),
        }
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "embeddings,default",
                   "--pool", pool, "--concurrency", "1", "--loglevel", "INFO",
                   "--hostname", f"{name}-{os.getpid()}@%h"]  # fmt: skip
        if purge:
            command.append("--purge")  # leftovers of earlier tests
        self.process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(iter(self.process.stdout.readline, "")),  # type: ignore[union-attr]
                                        daemon=True)  # fmt: skip
        self._reader.start()
        # Start producing only once the worker is consuming.
        wait_for(lambda: any(" ready." in line for line in self.lines) or self.process.poll() is not None, 60)
        assert self.process.poll() is None, self.output

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        """kill -9 the worker and every process of its pool, the way a lost machine stops them."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self._reader.join(timeout=5)
        print(self.output[-6000:])  # shown by pytest when the test failed
