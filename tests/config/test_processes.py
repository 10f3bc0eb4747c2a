"""Whole processes on embedded servers: separate homes and a real worker (`make demo`'s command: test_rundemo.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from config import embedded
from tests.imagefactory import image_bytes

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(VITRINE_HOME=str(home), DJANGO_SETTINGS_MODULE="config.settings.local", PYTHONUNBUFFERED="1")
    return env


def _manage(home: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_two_homes_keep_separate_catalogues(tmp_path: Path):
    for name, count in (("a", 2), ("b", 1)):
        images = tmp_path / f"images-{name}" / "things"
        images.mkdir(parents=True)
        for i in range(count):
            (images / f"{name}-{i}.png").write_bytes(image_bytes())
        home = tmp_path / name
        _manage(home, "migrate", "--noinput")
        assert f"Imported {count} file(s)" in _manage(home, "import_images", str(images.parent), "--no-progress")
    count_code = "from catalog.models import Product; print(sorted(Product.objects.values_list('title', flat=True)))"
    assert _manage(tmp_path / "a", "shell", "-c", count_code).strip().splitlines()[-1] == "['A 0', 'A 1']"
    assert _manage(tmp_path / "b", "shell", "-c", count_code).strip().splitlines()[-1] == "['B 0']"
    # Each command was the only user of its server: the last one out stopped it.
    assert not embedded.EmbeddedPostgres(tmp_path / "a").is_running()
    assert (tmp_path / "a" / "postgres" / "PG_VERSION").exists()
    assert (tmp_path / "a" / "media" / "products" / "originals").is_dir()


def test_a_real_worker_answers_on_the_embedded_broker(tmp_path: Path):
    home = tmp_path / "w"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--hostname",
            "test-worker@%h",
        ],
        cwd=ROOT,
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        code = (
            "import django, time; django.setup(); from config.celery import app, ensure_embedded_broker; "
            "ensure_embedded_broker(); deadline = time.time() + 60\n"
            "while time.time() < deadline:\n"
            "    replies = app.control.ping(timeout=1.0)\n"
            "    if replies: print(replies); break\n"
            "else: raise SystemExit('no worker answered')\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "test-worker@" in result.stdout and "'ok': 'pong'" in result.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output
    assert not embedded.EmbeddedRedis(home).is_running()
