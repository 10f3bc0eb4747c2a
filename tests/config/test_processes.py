"""Whole processes on embedded servers: separate homes, a real worker, and `make demo`'s command."""

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_rundemo_serves_the_shop_and_stops_cleanly(tmp_path: Path):
    demo = tmp_path / "demo"
    (demo / "images").mkdir(parents=True)
    rows = ["image,title,category,description,price,sku,color,stock"]
    for i in range(3):
        (demo / "images" / f"{i}.png").write_bytes(image_bytes(size=(300, 200)))
        rows.append(f"images/{i}.png,Demo thing {i},Gadgets,A thing.,{9 + i}.50,DEMO-{i},red,5")
    (demo / "manifest.csv").write_text("\n".join(rows) + "\n")
    home = tmp_path / "home"
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "rundemo", "--port", str(port), "--demo-dir", str(demo), "--web-workers", "1"],
        cwd=ROOT,
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Vitrine is running at" in line:
                break
        url = f"http://127.0.0.1:{port}/"
        assert any(url in line for line in lines), "".join(lines)
        home_page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "Gadgets" in home_page and "Demo thing 2" in home_page
        listing = urllib.request.urlopen(url + "products/?category=gadgets", timeout=10).read().decode()
        assert listing.count('class="card"') == 3
        product = urllib.request.urlopen(url + "products/demo-thing-1/", timeout=10).read().decode()
        assert "€10.50" in product
        image_url = product.split("data-gallery-main")[0].rsplit('src="', 1)[1].split('"')[0]
        with urllib.request.urlopen(url.rstrip("/") + image_url, timeout=10) as response:
            assert response.status == 200 and response.read(2) == b"\xff\xd8"
        assert (home / "demo-admin.txt").exists()
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=90)
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    assert "Vitrine stopped." in output
    assert not embedded.EmbeddedPostgres(home).is_running()
    assert not embedded.EmbeddedRedis(home).is_running()
