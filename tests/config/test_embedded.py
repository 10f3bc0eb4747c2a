"""The embedded servers: separate per VITRINE_HOME, shared by processes, stopped by the last one out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis as redis_py

from config import embedded

ROOT = Path(__file__).resolve().parents[2]


def _client(service: embedded.EmbeddedRedis) -> redis_py.Redis:
    return redis_py.Redis(unix_socket_path=str(service.socket_path))


def test_embedded_redis_is_per_home_and_reference_counted(tmp_path: Path):
    a, b = embedded.EmbeddedRedis(tmp_path / "a"), embedded.EmbeddedRedis(tmp_path / "b")
    a.ensure_running()
    b.ensure_running()
    try:
        assert a.socket_path != b.socket_path
        assert a.url.startswith("redis+socket://")
        _client(a).set("who", "a")
        assert _client(b).get("who") is None
        assert a.users() == [os.getpid()]
        # Another process takes a handle and exits cleanly: the server stays for us.
        code = (
            "import sys; from pathlib import Path; from config import embedded; "
            f"embedded.EmbeddedRedis(Path({str(tmp_path / 'a')!r})).ensure_running()"
        )
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
        assert a.is_running() and a.users() == [os.getpid()]
    finally:
        a.release()
        b.release()
    assert not a.is_running() and not b.is_running()


def test_handles_of_dead_processes_are_pruned(tmp_path: Path):
    service = embedded.EmbeddedRedis(tmp_path)
    service.ensure_running()
    # A user that was SIGKILLed leaves its pid behind; pid 999999 with a made-up start time is such a ghost.
    handles = json.loads(service._handles_path.read_text())
    service._handles_path.write_text(json.dumps([*handles, [999_999, 1.0]]))
    assert service.users() == [os.getpid()]
    service.release()
    assert not service.is_running()


def test_data_survives_a_restart(tmp_path: Path):
    service = embedded.EmbeddedRedis(tmp_path)
    service.ensure_running()
    _client(service).set("kept", "yes")
    service.release()
    service.ensure_running()
    try:
        assert _client(service).get("kept") == b"yes"
    finally:
        service.release()


def test_long_home_paths_get_a_short_socket(tmp_path: Path):
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    service = embedded.EmbeddedRedis(deep)
    assert len(str(service.socket_path)) <= 107
    service.ensure_running()
    try:
        assert _client(service).ping()
    finally:
        service.release()


def test_a_later_start_removes_handles_of_dead_processes_from_the_file(tmp_path: Path):
    """A crashed run leaves dead pids in redis.handles.json; the next process to start the server writes only
    the live ones back, so `embedded status` and the last one out see the truth."""
    service = embedded.EmbeddedRedis(tmp_path)
    service.run_dir.mkdir(parents=True)
    service._handles_path.write_text(json.dumps([[999_999, 1.0], [999_998, 2.0]]))
    service.ensure_running()
    try:
        assert [pid for pid, _ in json.loads(service._handles_path.read_text())] == [os.getpid()]
    finally:
        service.release()
    assert json.loads(service._handles_path.read_text()) == []
    assert not service.is_running()


def test_a_zombie_holds_no_server(tmp_path: Path):
    """A user that has exited but whose parent has not collected it yet (a zombie: what a killed gunicorn worker is
    for a moment) is not alive: the last real user out stops the server instead of waiting for it forever."""
    service = embedded.EmbeddedRedis(tmp_path)
    service.ensure_running()
    exited = subprocess.Popen([sys.executable, "-c", "pass"])  # never waited for: it stays a zombie
    try:
        deadline = time.monotonic() + 30
        while psutil.Process(exited.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        handles = json.loads(service._handles_path.read_text())
        service._handles_path.write_text(json.dumps([*handles, [exited.pid, psutil.Process(exited.pid).create_time()]]))
        assert service.users() == [os.getpid()]
        service.release()
        assert not service.is_running()
    finally:
        exited.wait()
