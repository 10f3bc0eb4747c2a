"""Faults done for real: the database restarts under a running app; a model's weights disappear."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from config import embedded

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
