"""The shop's own processes, started by ``rundemo`` and by ``benchmark --memory``: the web server, the Celery
worker and one-off ``manage.py`` steps.

Each child runs in a process group of its own (its own session): Ctrl-C reaches only the parent, which stops
the children in order. Stopping a child stops its whole group (gunicorn's workers, Celery's pool and beat) and
waits until none of them is left, zombies aside, so that the embedded servers stop with the last real user
instead of waiting for a process that is already on its way out. A child's output is read line by line: echoed,
and its last lines kept to explain a failure.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

TAIL_LINES = 40
# gunicorn's own access log, made quiet: only requests that went wrong (see config.gunicorn.ErrorsOnlyAccessLog).
WEB_LOGGER = "config.gunicorn.QuietLogger"


def web_command(*, host: str, port: int, workers: int, access_log: str = "errors") -> list[str]:
    """gunicorn serving the shop; ``access_log``: ``errors`` (4xx/5xx only), ``all`` or ``off``."""
    command = [sys.executable, "-m", "gunicorn", "-c", "python:config.gunicorn", "config.wsgi",
               "--bind", f"{host}:{port}", "--workers", str(workers), "--graceful-timeout", "5", "--timeout", "120",
               # gunicorn's default control socket lives in $HOME and would clash between two shops.
               "--no-control-socket"]  # fmt: skip
    if access_log != "off":
        command += ["--access-logfile", "-"]
        if access_log == "errors":
            command += ["--logger-class", WEB_LOGGER]
    return command


def worker_command(*, hostname: str, concurrency: int = 1, beat_schedule: Path | None = None,
                   loglevel: str = "INFO") -> list[str]:  # fmt: skip
    """A Celery worker on both queues; with ``beat_schedule`` it also runs the periodic sweep (``-B``)."""
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", loglevel,
               "-Q", "default,embeddings", "--concurrency", str(concurrency), "--hostname", hostname]  # fmt: skip
    if beat_schedule is not None:
        command += ["-B", "--schedule", str(beat_schedule)]
    return command


def manage_command(*args: str) -> list[str]:
    return [sys.executable, "manage.py", *args]


def group_members(pgid: int) -> list[psutil.Process]:
    """Live processes of a process group; zombies are dead already, whoever reaps them."""
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


class Child:
    """One child process in its own process group, its output pumped by a thread."""

    def __init__(self, name: str, command: list[str], *, env: dict[str, str], cwd: Path,
                 echo: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.name = name
        self.command = command
        self.env = env
        self.cwd = cwd
        self.echo = echo
        self.lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.last_output = time.monotonic()
        self.process: subprocess.Popen[str] | None = None
        self._pump: threading.Thread | None = None

    def start(self) -> Child:
        self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                        errors="replace", bufsize=1, start_new_session=True)  # fmt: skip
        self._pump = threading.Thread(target=self._read, name=f"output of {self.name}", daemon=True)
        self._pump.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            self.last_output = time.monotonic()
            if self.echo is not None:
                self.echo(line)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def members(self) -> list[psutil.Process]:
        return group_members(self.pid) if self.process is not None else []

    def cpu_seconds(self) -> float:
        """CPU time the whole group has used so far: it grows while the child works."""
        total = 0.0
        for process in self.members():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total

    def tail(self, n: int = 25) -> list[str]:
        return list(self.lines)[-n:]

    def stop(self, *, grace: float = 20.0) -> None:
        """Stop the child and everything it started, and wait until none of it runs.

        SIGTERM goes to the child alone while it lives: gunicorn's master and Celery's main process stop their
        own workers, pool and beat in order (a pool process signalled directly drops the task it was running).
        What is left after ``grace`` seconds (or orphaned by a child that died) gets SIGTERM, then SIGKILL.
        """
        if self.process is None:
            return
        deadline = time.monotonic() + grace
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            while self.returncode is None and time.monotonic() < deadline:
                time.sleep(0.2)
        if self.members():
            self._signal(signal.SIGTERM)
            deadline = max(deadline, time.monotonic() + 5)
        while self.members() and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.2)
        if self.members():
            self._signal(signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.members() and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.1)
        self._reap()
        if self._pump is not None:
            self._pump.join(timeout=5)  # the last lines (shutdown messages) still reach the terminal

    def kill(self) -> None:
        """Stop at once (a second Ctrl-C)."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def _reap(self) -> None:
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=0)
