"""Faults done for real: the database restarts under a running app; a model's weights disappear."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from config import embedded
from tests.search.workers import wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, token: str = "") -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_web_app_recovers_when_postgres_restarts_and_readyz_names_a_broken_space(tmp_path: Path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(VITRINE_HOME=str(home), DJANGO_SETTINGS_MODULE="config.settings.local", DEBUG="false",
               VITRINE_SIMCLR_CHECKPOINT=str(tmp_path / "gone.ckpt"), VITRINE_READYZ_TOKEN="probe-token")  # fmt: skip
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    # A worker that tried the simclr space recorded why it is down (its weights are missing).
    subprocess.run([sys.executable, "manage.py", "shell", "-c",
                    "from search.indexing import versions\ntry:\n    versions.space_load('simclr')\n"
                    "except versions.SpaceUnavailable: pass"],
                   cwd=ROOT, env=env, check=True, timeout=300)  # fmt: skip
    port = _free_port()
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
                            "--workers", "1", "--no-control-socket"], cwd=ROOT, env=env,
                           start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if _get(url + "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.3)
        assert _get(url + "/")[0] == 200
        status, body = _get(url + "/readyz", token="probe-token")
        assert status == 200 and '"simclr": {"available": false' in body and "gone.ckpt" in body
        assert _get(url + "/readyz") == (200, '{"ready": true}')  # no token, no details

        postgres = embedded.postgres(home)
        before = postgres._postmaster().pid
        assert postgres.stop(force=True)  # the database goes away under the running app
        assert not postgres.is_running()
        # The app's next request finds its connection dead (health checks), reconnects, and the
        # embedded backend starts the server again; nobody restarts the app.
        assert _get(url + "/")[0] == 200
        assert _get(url + "/readyz")[0] == 200
        assert postgres.is_running() and postgres._postmaster().pid != before
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)
        embedded.postgres(home).release()


def test_embedding_retries_follow_the_backoff_when_postgres_is_down(tmp_path: Path):
    """Issue 14, item 15: tasks that called self.retry() waited Celery's default 180 s ("Retry in 180s"),
    not the configured backoff, so a worker took minutes to recover from a database outage.

    The database is a real PostgreSQL that this test stops and starts again; the app reaches it through a
    plain DATABASE_URL, so nothing restarts it behind the test's back."""
    home = tmp_path / "home"
    server = embedded.postgres(home)
    server.ensure_running()  # held by this test until the end
    socket_dir = server.socket_dir
    env = {k: v for k, v in os.environ.items() if k not in {"CELERY_BROKER_URL", "VITRINE_DB_NAME"}}
    env.update(VITRINE_HOME=str(home), DJANGO_SETTINGS_MODULE="config.settings.local", DEBUG="false",
               DATABASE_URL=f"postgres://postgres@{quote(str(socket_dir), safe='')}:{server.port}/vitrine",
               VITRINE_ENABLED_SPACES="pixels", PYTHONUNBUFFERED="1",
               VITRINE_TASK_LOG_LEVEL="INFO")  # Celery's "succeeded" line; the retries warn on their own  # fmt: skip
    worker = None
    try:
        upload = (
            "from catalog import services\nfrom tests.imagefactory import image_bytes\n"
            "p = services.product_create(title='Kettle')\nservices.product_image_add(product=p, file=image_bytes())"
        )
        for command in (["migrate", "--noinput"], ["shell", "-c", upload]):
            subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True,
                           capture_output=True, timeout=300)  # fmt: skip
        assert server.stop(force=True) and not server.is_running()  # the database goes away, work is queued
        lines: list[str] = []
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "embeddings,default",
                                   "--pool", "solo", "--loglevel", "INFO", "--hostname", f"outage-{os.getpid()}@%h"],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)  # fmt: skip
        threading.Thread(target=lambda: lines.extend(iter(worker.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]

        def retries() -> list[int]:
            pattern = r"WARNING\S* .*image_embed_task\[[^\]]+\] will retry in (\d+) s"
            return [int(n) for n in re.findall(pattern, "".join(lines))]

        try:
            wait_for(lambda: retries(), 120, "the first retry")
        except AssertionError as timeout:
            raise AssertionError(f"{timeout}; the worker said:\n{''.join(lines)[:6000]}") from None
        assert retries()[0] <= 2, retries()  # retry_backoff=2: 0-2 s, then 0-4 s, 0-8 s…
        server.ensure_running()
        assert server.socket_dir == socket_dir
        # The embedding's own "succeeded" line (the start-up probe's would satisfy a looser test before it ran).
        wait_for(lambda: any("image_embed_task" in line and " succeeded in " in line for line in lines), 60,
                 "the embedding to succeed once the database is back")  # fmt: skip
        assert all(delay <= 2 ** (n + 1) for n, delay in enumerate(retries())), retries()
        count = subprocess.run([sys.executable, "manage.py", "shell", "-c", (
            "from search.models import ImageEmbedding\nprint(ImageEmbedding.objects.filter(status='ok').count())")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert count.stdout.strip().splitlines()[-1] == "1", count.stdout + count.stderr
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
        server.release()
        embedded.redis(home).stop(force=True)
