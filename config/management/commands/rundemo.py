"""manage.py rundemo — the whole shop on embedded servers: web, worker, demo catalogue.

``make demo`` runs this. It migrates, imports the demo catalogue when the shop
is empty, creates a staff account once, starts gunicorn and a Celery worker,
prints the URL and waits. Ctrl-C (or SIGTERM) stops the children, then the
embedded servers stop with the last process that used them.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from catalog.models import Product
from config import embedded
from config.health import wait_until_answers


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0


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
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args: Any, host: str, port: int, demo_dir: Path, web_workers: int, **options: Any) -> None:
        self._children: list[subprocess.Popen[bytes]] = []
        self._stopping = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self._prepare(demo_dir)
            port = self._pick_port(host, port)
            self._start_children(host, port, web_workers)
            url = f"http://{host}:{port}/"
            self._wait_ready(url)
            if not self._stopping:
                self._banner(url)
                self._supervise()
        finally:
            self._stop_children()
        self.stdout.write("Vitrine stopped.")

    # -- steps ------------------------------------------------------------------------
    def _prepare(self, demo_dir: Path) -> None:
        if settings.VITRINE_EMBEDDED_REDIS:
            embedded.redis(settings.VITRINE_HOME).ensure_running()
        connection.ensure_connection()  # starts the embedded PostgreSQL if it is ours
        call_command("migrate", interactive=False, verbosity=0)
        if not Product.objects.exists():
            manifest = demo_dir / "manifest.csv"
            if manifest.exists():
                self.stdout.write(f"The shop is empty: importing the demo catalogue from {demo_dir} …")
                call_command("import_images", str(demo_dir), manifest=manifest, stdout=self.stdout)
            else:
                self.stdout.write(self.style.WARNING(f"The shop is empty and {manifest} is missing."))
        self._staff_account()
        connection.close()  # children open their own; ours must not sit idle-in-transaction

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
        raise CommandError(f"no free port between {port} and {port + 49} on {host}")

    def _start_children(self, host: str, port: int, web_workers: int) -> None:
        # Web workers keep their query models warm, one torch thread each (the worker has the cores).
        env = {
            "VITRINE_PRELOAD_QUERY_MODELS": "true",
            "VITRINE_TORCH_THREADS": "1",
            **os.environ,
            "VITRINE_HOME": str(settings.VITRINE_HOME),
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.local"),
        }
        python = sys.executable
        schedule = Path(settings.VITRINE_HOME) / "run" / "celerybeat-schedule"
        # One pool process: its model threads use the cores. -B runs the periodic sweep.
        worker = [python, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
                  "-Q", "default,embeddings", "--concurrency", "1", "-B", "--schedule", str(schedule),
                  "--hostname", f"demo-{os.getpid()}@%h"]  # fmt: skip
        web = [python, "-m", "gunicorn", "-c", "python:config.gunicorn", "config.wsgi", "--bind", f"{host}:{port}",
               "--workers", str(web_workers),
               "--access-logfile", "-", "--graceful-timeout", "5", "--timeout", "120",
               # gunicorn's default control socket lives in $HOME and would clash between two demos.
               "--no-control-socket"]  # fmt: skip
        commands = [worker, web]
        for command in commands:
            # Own session: Ctrl-C reaches us, and we stop the children in order.
            self._children.append(subprocess.Popen(command, cwd=settings.BASE_DIR, env=env, start_new_session=True))

    def _wait_ready(self, url: str) -> None:
        def keep_waiting() -> bool:
            if any(child.poll() is not None for child in self._children):
                raise CommandError("a demo process exited during start-up; see the log above")
            return not self._stopping

        if not wait_until_answers(url, timeout=60, keep_waiting=keep_waiting) and not self._stopping:
            raise CommandError(f"the web server did not answer at {url} within 60 s")

    def _banner(self, url: str) -> None:
        lines = ["", f"  Vitrine is running at {url}", f"  Staff admin: {url}admin/"]
        if self._credentials:
            lines.append(
                f"  Staff login: {self._credentials[0]} / {self._credentials[1]}   "
                f"(also in {Path(settings.VITRINE_HOME) / 'demo-admin.txt'})"
            )
        lines += [f"  Data: {settings.VITRINE_HOME}", "  Press Ctrl-C to stop.", ""]
        self.stdout.write(self.style.SUCCESS("\n".join(lines)))
        self.stdout.flush()

    def _supervise(self) -> None:
        while not self._stopping:
            for child in self._children:
                if child.poll() is not None:
                    name = " ".join(str(arg) for arg in list(child.args)[2:4])  # type: ignore[arg-type]
                    raise CommandError(f"{name} exited with status {child.returncode}")
            time.sleep(0.5)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stopping = True

    def _stop_children(self) -> None:
        for child in reversed(self._children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in self._children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
