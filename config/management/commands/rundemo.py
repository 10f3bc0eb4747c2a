"""manage.py rundemo — the whole shop on embedded servers: web, worker, demo catalogue.

``make demo`` runs this. It says what it is doing at every step: it starts the embedded servers, migrates,
imports the demo catalogue when the shop is empty (with its progress), creates a staff account once, prepares
the models (on a first run, exporting them to ONNX: one line per model), starts the Celery worker and gunicorn,
and prints the URL once the shop answers. It waits as long as the processes make progress, never a fixed time;
when something fails it prints the reason and the end of that process's output.

Every way out (Ctrl-C, SIGTERM, a failed start, a child that dies) stops every process it started, their
children included, and then the embedded servers, unless another process of this home still uses them.
"""

from __future__ import annotations

import csv
import os
import secrets
import signal
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from catalog.models import Product
from config import embedded, embedded_milvus
from config.processes import Child, manage_command, web_command, worker_command

HEARTBEAT_S = 10  # say what we are waiting for after this long without a word from anyone
STALL_S = 180  # a child that neither prints nor uses CPU for this long is stuck


class StartFailed(Exception):
    """The shop could not start; the message says why, ``child`` whose output explains it."""

    def __init__(self, message: str, child: Child | None = None) -> None:
        super().__init__(message)
        self.child = child


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Command(BaseCommand):
    help = "Run the demo shop (web server + Celery worker) on the embedded servers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("VITRINE_BIND", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("VITRINE_PORT", "8000")))
        parser.add_argument(
            "--demo-dir",
            type=Path,
            default=Path(settings.BASE_DIR) / "demo",
            help="Folder with manifest.csv, imported when the shop is empty.",
        )
        parser.add_argument("--limit", type=int, default=0,
                            help="Import only the first N products of the demo manifest (0 = all).")  # fmt: skip
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--verbose", action="store_true",
                            help="Log every request and every task, not only what went wrong.")  # fmt: skip

    def handle(self, *args: Any, host: str, port: int, demo_dir: Path, limit: int, web_workers: int, verbose: bool,
               **options: Any) -> None:  # fmt: skip
        self._children: list[Child] = []
        self._verbose = verbose
        self._chatter = time.monotonic()  # when anyone last said something on the terminal
        self._doing, self._doing_since = "", time.monotonic()  # what the heartbeat says we are waiting for
        self._holding, self._held = False, False
        # Ctrl-C and SIGTERM raise KeyboardInterrupt, also where our parent started us with SIGINT ignored.
        previous = signal.signal(signal.SIGTERM, self._interrupt)
        signal.signal(signal.SIGINT, self._interrupt)
        failure: StartFailed | None = None
        heartbeat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        heartbeat.start()
        try:
            self._prepare(demo_dir, limit)
            url = self._start(host, self._pick_port(host, port), web_workers)
            self._doing = ""
            self._banner(url)
            self._supervise()
        except KeyboardInterrupt:
            self._say("\nStopping Vitrine …")
        except StartFailed as exc:
            failure = exc
        finally:
            self._doing = ""
            # A second Ctrl-C while we stop: no more waiting for anyone.
            signal.signal(signal.SIGINT, self._kill_now)
            signal.signal(signal.SIGTERM, self._kill_now)
            if failure is not None:
                self._report(failure)
            self._stop_children()
            self._stop_servers()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
        if failure is not None:
            raise CommandError(str(failure))
        self._say("Vitrine stopped.")

    # -- output ------------------------------------------------------------------------
    def _say(self, line: str, style: Callable[[str], str] | None = None) -> None:
        self.stdout.write(style(line) if style else line)
        self.stdout.flush()
        self._chatter = time.monotonic()

    def _step(self, line: str, doing: str) -> None:
        """Say what comes next; until the next step, the heartbeat repeats that we are ``doing`` it."""
        self._say(line)
        self._doing, self._doing_since = doing, time.monotonic()

    def _heartbeat(self) -> None:
        """Nothing stays silent for long: after HEARTBEAT_S without a word, say what we are still waiting for."""
        while True:
            time.sleep(1)
            if self._doing and time.monotonic() - self._chatter > HEARTBEAT_S:
                self._say(f"  … still {self._doing} ({time.monotonic() - self._doing_since:.0f} s)")

    def _echo(self, name: str) -> Callable[[str], None]:
        def echo(line: str) -> None:
            self._say(f"[{name}] {line}")

        return echo

    # -- steps ------------------------------------------------------------------------
    def _prepare(self, demo_dir: Path, limit: int) -> None:
        self._step(f"Starting the embedded database and broker in {settings.VITRINE_HOME} …",
                   "starting PostgreSQL and Redis")  # fmt: skip
        if settings.VITRINE_EMBEDDED_REDIS:
            embedded.redis(settings.VITRINE_HOME).ensure_running()
        if embedded_milvus.in_use():
            self._step("Starting the embedded Milvus server (about 10 s) …", "starting Milvus")
            embedded_milvus.milvus(settings.VITRINE_HOME).ensure_running()  # web and worker then share it
        connection.ensure_connection()  # starts the embedded PostgreSQL if it is ours
        self._step("Migrating the database …", "migrating the database")
        call_command("migrate", interactive=False, verbosity=0)
        if not Product.objects.exists():
            self._import_demo(demo_dir, limit)
        self._staff_account()
        connection.close()  # children open their own; ours must not sit idle-in-transaction
        self._step("Preparing the models (a first run exports them to ONNX; later runs load them in seconds) …",
                   "preparing the models")  # fmt: skip
        self._run_to_end(Child("models", manage_command("prepare_models"), env=self._env(), cwd=settings.BASE_DIR,
                               echo=self._echo("models")), "preparing the models")  # fmt: skip

    def _import_demo(self, demo_dir: Path, limit: int) -> None:
        manifest = demo_dir / "manifest.csv"
        if not manifest.exists():
            self._say(f"The shop is empty and {manifest} is missing.", self.style.WARNING)
            return
        with tempfile.TemporaryDirectory() as scratch:
            if limit > 0:
                with manifest.open(newline="") as fh:
                    rows = list(csv.reader(fh))
                manifest = Path(scratch) / "manifest.csv"
                with manifest.open("w", newline="") as fh:
                    csv.writer(fh).writerows(rows[: limit + 1])
            what = f"the first {limit} products of the demo catalogue" if limit > 0 else "the demo catalogue"
            # The import shows its own progress (a bar on a terminal, a line every few seconds in a log).
            self._step(f"The shop is empty: importing {what} from {demo_dir} …", "")
            # No look-alike check here: the worker records the demo's near-duplicates as it embeds the pictures.
            call_command("import_images", str(demo_dir), manifest=manifest, stdout=self.stdout, no_notes=True)

    def _staff_account(self) -> None:
        User = get_user_model()
        credentials = Path(settings.VITRINE_HOME) / "demo-admin.txt"
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@example.com", password)
            credentials.write_text(f"admin {password}\n")
            credentials.chmod(0o600)
        self._credentials = credentials.read_text().split() if credentials.exists() else None

    def _pick_port(self, host: str, port: int) -> int:
        for candidate in range(port, port + 50):
            if _port_free(host, candidate):
                return candidate
        raise StartFailed(f"no free port between {port} and {port + 49} on {host}")

    def _env(self) -> dict[str, str]:
        env = {
            # Web workers keep their query models warm, one inference thread each (the worker has the cores).
            "VITRINE_PRELOAD_QUERY_MODELS": "true",
            **os.environ,
            "VITRINE_HOME": str(settings.VITRINE_HOME),
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.local"),
            "PYTHONUNBUFFERED": "1",
        }
        if self._verbose:
            env["VITRINE_TASK_LOG_LEVEL"] = "INFO"
        else:
            # Celery warns about running as root on every start; the demo runs as whoever typed `make demo`.
            quiet = "ignore:You're running the worker with superuser"
            env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), quiet]))
        return env

    def _start(self, host: str, port: int, web_workers: int) -> str:
        env = self._env()
        schedule = Path(settings.VITRINE_HOME) / "run" / "celerybeat-schedule"
        # One pool process: its model threads use the cores. -B runs the periodic sweep.
        worker = worker_command(hostname=f"demo-{os.getpid()}@%h", beat_schedule=schedule)
        web = web_command(host=host, port=port, workers=web_workers, access_log="all" if self._verbose else "errors")
        url = f"http://{host}:{port}/"
        self._step("Starting the Celery worker and the web server …", f"waiting for the web server to answer at {url}")
        for name, command, extra in (("worker", worker, {}), ("web", web, {"VITRINE_TORCH_THREADS": "1"})):
            self._spawn(Child(name, command, env={**env, **extra}, cwd=settings.BASE_DIR, echo=self._echo(name)))
        self._wait(f"waiting for the web server to answer at {url}", lambda: _answers(url), self._children)
        return url

    def _run_to_end(self, child: Child, what: str) -> None:
        self._spawn(child)
        self._wait(what, lambda: child.returncode is not None, [child], allow_exit=child)
        self._children.remove(child)
        if child.returncode != 0:
            raise StartFailed(f"{what} failed (exit status {child.returncode})", child)

    def _wait(self, what: str, done: Callable[[], bool], children: list[Child],
              allow_exit: Child | None = None) -> None:  # fmt: skip
        """Wait until ``done()``, as long as the children live and make progress (output or CPU time)."""
        progress_at, cpu = time.monotonic(), sum(child.cpu_seconds() for child in children)
        while not done():
            for child in children:
                if child is not allow_exit and child.returncode is not None:
                    raise StartFailed(f"the {child.name} process exited (status {child.returncode}) while {what}",
                                      child)  # fmt: skip
            now = time.monotonic()
            used = sum(child.cpu_seconds() for child in children)
            if used > cpu + 0.2 or any(child.last_output > progress_at for child in children):
                progress_at, cpu = now, used
            elif now - progress_at > STALL_S:
                stuck = children[-1] if children else None
                raise StartFailed(f"no progress for {STALL_S} s while {what}", stuck)
            time.sleep(0.5)

    def _banner(self, url: str) -> None:
        lines = ["", f"  Vitrine is running at {url}", f"  Staff admin: {url}admin/"]
        if self._credentials:
            lines.append(
                f"  Staff login: {self._credentials[0]} / {self._credentials[1]}   "
                f"(also in {Path(settings.VITRINE_HOME) / 'demo-admin.txt'})"
            )
        lines += [f"  Data: {settings.VITRINE_HOME}", "  Press Ctrl-C to stop.", ""]
        self._say("\n".join(lines), self.style.SUCCESS)

    def _supervise(self) -> None:
        while True:
            for child in self._children:
                if child.returncode is not None:
                    raise StartFailed(f"the {child.name} process exited with status {child.returncode}", child)
            time.sleep(0.5)

    def _report(self, failure: StartFailed) -> None:
        self._say(f"\nVitrine could not go on: {failure}", self.style.ERROR)
        if failure.child is not None and failure.child.tail():
            self._say(f"The last lines of the {failure.child.name} process:")
            for line in failure.child.tail():
                self._say(f"  | {line}")

    # -- stopping -----------------------------------------------------------------------
    def _interrupt(self, signum: int, frame: Any) -> None:
        if self._holding:
            self._held = True  # raised once the child being started is on our list (see _spawn)
            return
        raise KeyboardInterrupt

    def _spawn(self, child: Child) -> Child:
        """Start ``child`` and list it before a Ctrl-C may interrupt us: no child is ever left unknown."""
        self._holding = True
        try:
            self._children.append(child)
            child.start()
        finally:
            self._holding = False
        if self._held:
            raise KeyboardInterrupt
        return child

    def _kill_now(self, signum: int, frame: Any) -> None:
        for child in self._children:
            child.kill()

    def _stop_children(self) -> None:
        # The web server first (no request starts a task meanwhile), then the worker, each with its whole group.
        for child in reversed(self._children):
            child.stop()

    def _stop_servers(self) -> None:
        """Stop the embedded servers now that our children are gone, unless another process still uses them."""
        connection.close()
        services: list[embedded.EmbeddedService] = []
        if settings.DATABASES["default"]["ENGINE"] == "config.embedded_postgres":
            services.append(embedded.postgres(settings.VITRINE_HOME))
        if settings.VITRINE_EMBEDDED_REDIS:
            services.append(embedded.redis(settings.VITRINE_HOME))
        if embedded_milvus.in_use():
            services.append(embedded_milvus.milvus(settings.VITRINE_HOME))
        for service in services:
            service.release()
            if service.is_running():
                users = ", ".join(map(str, service.users())) or "none alive"
                self._say(f"The embedded {service.name} keeps running for other processes of this home ({users}).")
