"""`make demo`'s command, started for real: it serves the shop on a first run on a busy machine, says what it is
waiting for, and every way out (Ctrl-C after beat has run, a failed start, a crashed child) leaves nothing running."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.imagefactory import image_bytes

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(VITRINE_HOME=str(home), DJANGO_SETTINGS_MODULE="config.settings.local", PYTHONUNBUFFERED="1", **extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _demo_folder(folder: Path, count: int = 3) -> Path:
    (folder / "images").mkdir(parents=True)
    rows = ["image,title,category,description,price,sku,color,stock"]
    for i in range(count):
        (folder / "images" / f"{i}.png").write_bytes(image_bytes(size=(300, 200), color=(40 * i, 120, 200)))
        rows.append(f"images/{i}.png,Demo thing {i},Gadgets,A thing.,{9 + i}.50,DEMO-{i},red,5")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


class Demo:
    """``manage.py rundemo`` in a subprocess; its lines are read (with the time each arrived) by a thread."""

    def __init__(self, home: Path, demo: Path, *args: str, web_workers: int = 1, **env: str) -> None:
        self.home, self.port = home, _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.lines: list[tuple[float, str]] = []
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "rundemo", "--port", str(self.port), "--demo-dir", str(demo),
             "--web-workers", str(web_workers), *args],
            cwd=ROOT, env=_env(home, **env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for _, line in self.lines):
            assert self.process.poll() is None, f"rundemo exited ({self.process.returncode}):\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.output}"
            time.sleep(0.2)

    def finish(self, timeout: float = 120) -> int:
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return self.process.returncode

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)


@pytest.fixture
def demo_dir(tmp_path: Path) -> Iterator[Path]:
    yield _demo_folder(tmp_path / "demo")
    # Whatever a failed test left behind (the check is the test's; this only keeps CI clean): every process of
    # this home, then its servers.
    home = str(tmp_path / "home")
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get("VITRINE_HOME") == home:
                process.kill()
        except psutil.Error:
            continue
    subprocess.run(
        [sys.executable, "manage.py", "embedded", "stop", "--force"],
        cwd=ROOT,
        env=_env(tmp_path / "home", VITRINE_VECTOR_STORE="milvus"),
        capture_output=True,
        timeout=120,
    )  # fmt: skip  (Milvus too, for the Milvus mode's test)


def assert_nothing_left(home: Path, leftovers: Iterator[psutil.Process] | list[psutil.Process] = (),
                        output: str = "") -> None:  # fmt: skip
    """What a user would check: ``manage.py embedded status`` says both servers are down, no handle is left,
    and none of the processes the demo started still runs."""
    status = subprocess.run([sys.executable, "manage.py", "embedded", "status"], cwd=ROOT, env=_env(home),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert status.returncode == 0, status.stderr
    handles = {name: (home / "run" / f"{name}.handles.json") for name in ("postgres", "redis")}
    written = {name: path.read_text() if path.exists() else "" for name, path in handles.items()}
    assert status.stdout.count("not running") == 2, (status.stdout, written, output)
    assert all(text in ("", "[]") for text in written.values()), written
    alive = [p for p in leftovers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [p.cmdline() for p in alive]


def test_rundemo_serves_the_shop_and_ctrl_c_after_beat_has_run_leaves_nothing_running(tmp_path, demo_dir):
    # Beat sends the sweep every second, so its process has taken a handle on Redis before we stop.
    demo = Demo(tmp_path / "home", demo_dir, VITRINE_ENABLED_SPACES="pixels", VITRINE_SWEEP_INTERVAL_S="1")
    started: list[psutil.Process] = []
    try:
        demo.wait_for("Vitrine is running at")
        assert demo.url in demo.output
        home_page = urllib.request.urlopen(demo.url, timeout=10).read().decode()
        assert "Gadgets" in home_page and "Demo thing 2" in home_page
        listing = urllib.request.urlopen(demo.url + "products/?category=gadgets", timeout=10).read().decode()
        assert listing.count('class="card"') == 3
        product = urllib.request.urlopen(demo.url + "products/demo-thing-1/", timeout=10).read().decode()
        assert "€10.50" in product
        image_url = product.split("data-gallery-main")[0].rsplit('src="', 1)[1].split('"')[0]
        with urllib.request.urlopen(demo.url.rstrip("/") + image_url, timeout=10) as response:
            assert response.status == 200 and response.read(2) == b"\xff\xd8"
        assert (tmp_path / "home" / "demo-admin.txt").exists()
        demo.wait_for("Sending due task sweep", timeout=60)
        time.sleep(2)  # the sweep it sent has reached the worker: beat's process holds its handle
        started = demo.children()
    finally:
        demo.process.send_signal(signal.SIGINT)
        code = demo.finish()
    assert code == 0, demo.output
    assert "Vitrine stopped." in demo.output
    assert "/media/" not in demo.output and "GET / " not in demo.output  # no access log of what went well
    assert "superuser privileges" not in demo.output  # Celery's warning about root, for a local demo
    assert "Task search.tasks" not in demo.output  # two lines per task and image: the log stays readable
    assert_nothing_left(tmp_path / "home", started, demo.output)


def test_a_failed_start_says_why_and_leaves_nothing_running(tmp_path, demo_dir):
    # gunicorn cannot load this worker class: the web server dies after the database and broker started.
    demo = Demo(tmp_path / "home", demo_dir, VITRINE_ENABLED_SPACES="pixels",
                GUNICORN_CMD_ARGS="--worker-class=vitrine_no_such.Worker")  # fmt: skip
    code = demo.finish(timeout=300)
    assert code == 1, demo.output
    assert "Vitrine could not go on: the web process exited" in demo.output
    assert "The last lines of the web process:" in demo.output
    assert "vitrine_no_such" in demo.output.split("The last lines of the web process:")[1]
    assert "Vitrine is running" not in demo.output
    assert_nothing_left(tmp_path / "home", output=demo.output)


def test_a_crashed_child_stops_the_rest_and_leaves_nothing_running(tmp_path, demo_dir):
    demo = Demo(tmp_path / "home", demo_dir, VITRINE_ENABLED_SPACES="pixels")
    try:
        demo.wait_for("Vitrine is running at")
        started = demo.children()
        worker = next(p for p in started if "celery" in " ".join(p.cmdline()) and p.ppid() == demo.process.pid)
        worker.kill()  # the Celery worker's main process dies at once; its pool and beat are orphaned
        code = demo.finish()
    finally:
        if demo.process.poll() is None:
            demo.process.kill()
    assert code == 1, demo.output
    assert "Vitrine could not go on: the worker process exited with status -9" in demo.output
    assert_nothing_left(tmp_path / "home", started, demo.output)


def _spin() -> None:
    while True:
        pass


def test_a_first_start_on_a_busy_machine_with_no_model_cache_serves_the_shop(tmp_path, demo_dir):
    """The first `make demo` on a slow machine: the models are exported while every core is busy. It must print
    its URL and serve it, and never stay silent long about what it is waiting for."""
    home = tmp_path / "home"
    assert not (home / "models").exists()  # nothing exported yet: this start exports and checks every model
    # Four busy loops per core: each of our processes gets a fifth of a core at best.
    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(4 * (os.cpu_count() or 1))]
    for hog in hogs:
        hog.start()
    demo = Demo(home, demo_dir, "--limit", "2", web_workers=2, VITRINE_ENABLED_SPACES="pixels,cnn,text")
    try:
        demo.wait_for("Vitrine is running at", timeout=600)
        page = urllib.request.urlopen(demo.url, timeout=30).read().decode()
        assert "Demo thing 1" in page and "Demo thing 2" not in page  # --limit 2: the first two rows only
    finally:
        for hog in hogs:
            hog.kill()
        demo.process.send_signal(signal.SIGINT)
        demo.finish()
    output = demo.output
    assert "Preparing the models" in output
    for key in ("cnn", "text"):
        assert f"[models]   {key}: ready in" in output, output
    assert sorted(p.name for p in (home / "models" / "onnx").glob("*.onnx"))  # exported by this start
    # Said what it waited for: never more than a heartbeat (plus the scheduling slack of a busy machine) silent.
    url_at = next(i for i, (_, line) in enumerate(demo.lines) if "Vitrine is running at" in line)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(demo.lines[: url_at + 1])]
    assert max(gaps) < 20, (max(gaps), output)
    assert_nothing_left(home, output=output)


def test_rundemo_on_milvus_shares_one_embedded_server_and_stops_it(tmp_path, demo_dir):
    """``VITRINE_VECTOR_STORE=milvus make demo``: rundemo starts the embedded Milvus server before the web server
    and the worker, which share it; the worker's vectors reach Milvus and the product page's similar products
    come from it; Ctrl-C stops everything, Milvus included."""
    from pymilvus import MilvusClient

    from config import embedded_milvus

    home = tmp_path / "home"
    demo = Demo(
        home,
        demo_dir,
        VITRINE_ENABLED_SPACES="pixels",
        VITRINE_VECTOR_STORE="milvus",
        VITRINE_FALLBACK_IMAGE_SPACE="pixels",
    )  # "Looks similar" by the one space enabled
    started: list[psutil.Process] = []
    try:
        demo.wait_for("Starting the embedded Milvus server")
        demo.wait_for("Vitrine is running at", timeout=400)
        status = subprocess.run([sys.executable, "manage.py", "embedded", "status"], cwd=ROOT,
                                env=_env(home, VITRINE_VECTOR_STORE="milvus"), capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        line = next(line for line in status.stdout.splitlines() if line.startswith("milvus"))
        uri = line.split(" on ")[1].split()[0]
        client = MilvusClient(uri=uri, token=embedded_milvus.milvus(home).token, timeout=30)

        def rows() -> int:
            names = [n for n in client.list_collections() if n.startswith("vitrine_pixels_")]
            if not names:
                return 0
            counted = client.query(names[0], filter="id >= 0", output_fields=["count(*)"], consistency_level="Strong")
            return int(counted[0]["count(*)"])

        deadline = time.monotonic() + 180
        while rows() < 3:  # the worker embeds the three demo pictures into Postgres and Milvus
            assert time.monotonic() < deadline, demo.output
            time.sleep(1)
        client.close()

        def similar_shown() -> bool:
            page = urllib.request.urlopen(demo.url + "products/demo-thing-1/", timeout=30).read().decode()
            return "Demo thing 0" in page or "Demo thing 2" in page

        deadline = time.monotonic() + 60
        while not similar_shown():  # read from Milvus by the web server, within Session consistency's second
            assert time.monotonic() < deadline, demo.output
            time.sleep(1)
        started = demo.children()
    finally:
        demo.process.send_signal(signal.SIGINT)
        code = demo.finish()
    assert code == 0, demo.output
    status = subprocess.run([sys.executable, "manage.py", "embedded", "status"], cwd=ROOT,
                            env=_env(home, VITRINE_VECTOR_STORE="milvus"), capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert status.stdout.count("not running") == 3, (status.stdout, demo.output)
    assert (home / "run" / "milvus.handles.json").read_text() in ("", "[]")
    alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [p.cmdline() for p in alive]
