#!/usr/bin/env python3
"""What hostile photos cost a web worker: time per request and the worker's peak memory growth.

Starts the shop under gunicorn (one sync worker, as in production) on its own embedded PostgreSQL and Redis,
with a few indexed products (the ``pixels`` space), then sends anonymous ``POST /api/search/image`` requests,
one at a time: a normal photo and the hostile files of issue 14 (a progressive JPEG of 5,000 scans, 6300×6300
one-colour 16-bit PNG, RGBA PNG and GIF, a JPEG of 300 APP1 segments, a 100 MB body). Per request it measures
the wall time seen by the client and the worker's peak RSS growth (``VmHWM`` after the request minus ``VmRSS``
before it, the peak reset through ``/proc/PID/clear_refs`` first).

    .venv/bin/python scripts/bench_hostile_photos.py [--repeat 3] [--compare OTHER_CHECKOUT]

``--compare`` runs the same requests against another checkout of the code (e.g. ``git archive`` of main
unpacked somewhere), alternating the two servers request by request, and prints both side by side.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import imagefactory  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field_name} for {pid}")


@dataclass
class Server:
    label: str
    code: Path
    home: Path
    port: int = 0
    process: subprocess.Popen | None = None
    times: dict[str, list[float]] = field(default_factory=dict)
    growth: dict[str, list[int]] = field(default_factory=dict)
    statuses: dict[str, set[int]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
        env.update(VITRINE_HOME=str(self.home), DJANGO_SETTINGS_MODULE="config.settings.local", DEBUG="false",
                   VITRINE_ENABLED_SPACES="pixels", VITRINE_PRIMARY_IMAGE_SPACE="pixels",
                   VITRINE_FALLBACK_IMAGE_SPACE="pixels", VITRINE_RATE_LIMIT_PHOTO="1000000",
                   VITRINE_RATE_LIMIT_SEARCH="1000000", VITRINE_TORCH_THREADS="1", PYTHONUNBUFFERED="1")  # fmt: skip
        return env

    def manage(self, *args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=self.code, env=self.env, check=True,
                       stdout=subprocess.DEVNULL, timeout=900)  # fmt: skip

    def start(self) -> None:
        images = self.home / "seed" / "things"
        images.mkdir(parents=True, exist_ok=True)
        for i in range(12):
            (images / f"thing-{i}.png").write_bytes(imagefactory.image_bytes(size=(200, 200), color=(20 * i, 90, 160)))
        self.manage("migrate", "--noinput")
        self.manage("import_images", str(images.parent), "--no-progress")
        self.manage("reindex", "--space", "pixels", "--sync")
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{self.port}", "--workers", "1",
             "--timeout", "300", "--no-control-socket"],
            cwd=self.code, env=self.env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"{self.label}: the server did not start")

    @property
    def worker_pid(self) -> int:
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return int(children[0])

    def post(self, name: str, filename: str, data: bytes) -> None:
        pid = self.worker_pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        before = _status(pid, "VmRSS")
        boundary = "----vitrine-bench"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
        tail = f"\r\n--{boundary}--\r\n".encode()
        body = memoryview(head + data + tail)
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", self.port), timeout=600) as sock:
            sock.sendall((f"POST /api/search/image?k=5 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                          f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n").encode())  # fmt: skip
            sent = 0
            try:
                # Stop sending as soon as the server answers: a body refused unread costs no upload time.
                while sent < len(body):
                    readable, writable, _ = select.select([sock], [sock], [], 600)
                    if readable:
                        break
                    if writable:
                        sent += sock.send(body[sent : sent + 65536])
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                line = sock.makefile("rb").readline().decode()
                status = int(line.split()[1]) if line else 0
            except (ConnectionResetError, IndexError, ValueError):
                status = 0
        elapsed = time.perf_counter() - started
        time.sleep(0.2)  # let the worker settle before reading its peak
        self.times.setdefault(name, []).append(elapsed)
        self.growth.setdefault(name, []).append(_status(pid, "VmHWM") - before)
        self.statuses.setdefault(name, set()).add(status)

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
        subprocess.run([sys.executable, "manage.py", "embedded", "stop"], cwd=self.code, env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)  # fmt: skip


def cases() -> list[tuple[str, str, bytes]]:
    """(name, file name, bytes) of each request, the normal photo first."""
    rng_photo = io.BytesIO()
    from PIL import Image

    Image.effect_noise((1600, 1200), 40).convert("RGB").save(rng_photo, format="JPEG", quality=88)
    return [
        ("normal 1600x1200 JPEG", "photo.jpg", rng_photo.getvalue()),
        ("progressive JPEG, 5000 scans", "scans.jpg", imagefactory.progressive_jpeg_many_scans()),
        ("16-bit PNG 6300x6300", "deep.png", imagefactory.png_16bit()),
        ("RGBA PNG 6300x6300", "alpha.png", imagefactory.one_colour("PNG")),
        ("GIF 6300x6300", "big.gif", imagefactory.one_colour("GIF", mode="P")),
        ("JPEG with 300 APP1 segments", "meta.jpg", imagefactory.jpeg_with_app1_segments()),
        ("100 MB body", "huge.jpg", os.urandom(100 * 1024 * 1024)),
        # Just inside the photo search's limits (16 MP, 100 scans): the most a request can still cost.
        ("progressive JPEG 4000x4000, 100 scans", "s100.jpg", imagefactory.progressive_jpeg_many_scans(scans=90)),
        ("16-bit PNG 4000x4000", "deep4k.png", imagefactory.png_16bit(side=4000)),
        ("RGBA PNG 4000x4000", "alpha4k.png", imagefactory.one_colour("PNG", side=4000)),
        ("GIF 4000x4000", "big4k.gif", imagefactory.one_colour("GIF", side=4000, mode="P")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", type=Path, help="another checkout of Vitrine, e.g. main unpacked from git archive")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vitrine-bench-"))
    servers = [Server("this", ROOT, scratch / "this")]
    if args.compare:
        servers.insert(0, Server("compared", args.compare.resolve(), scratch / "compared"))
    requests = cases()
    try:
        for server in servers:
            server.start()
        for _ in range(args.repeat):
            for name, filename, data in requests:
                for server in servers:
                    server.post(name, filename, data)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    width = max(len(name) for name, _, _ in requests)
    header = f"{'request':<{width}} {'bytes':>11}"
    for server in servers:
        header += f" | {server.label + ': status':>16} {'median s':>9} {'max s':>7} {'peak MiB':>9}"
    print(header)
    summary: dict[str, dict[str, object]] = {}
    for name, _, data in requests:
        line = f"{name:<{width}} {len(data):>11,}"
        for server in servers:
            times, growth = server.times[name], server.growth[name]
            statuses = ",".join(str(s) for s in sorted(server.statuses[name]))
            line += (f" | {statuses:>16} {statistics.median(times):>9.2f} {max(times):>7.2f}"
                     f" {max(growth) / 1048576:>9.0f}")  # fmt: skip
            summary.setdefault(server.label, {})[name] = {"statuses": sorted(server.statuses[name]), "times": times,
                                                         "peak_growth_bytes": growth}  # fmt: skip
        print(line)
    for server in servers:
        hostile = [n for n, _, _ in requests[1:]]
        worst_time = max(max(server.times[n]) for n in hostile)
        worst_growth = max(max(server.growth[n]) for n in hostile)
        print(f"{server.label}: worst hostile request {worst_time:.2f} s, worst peak growth "
              f"{worst_growth / 1048576:.0f} MiB")  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
