"""The Milvus mode on the embedded Milvus server: the lifecycle, a real Celery worker writing while the web reads,
and the server killed in the middle of a reindex (nothing lost, a 503 meanwhile, caught up afterwards)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from io import StringIO

import numpy as np
import pytest
from django.conf import settings
from django.core.management import call_command
from django.urls import reverse

from catalog import services as catalog_services
from config import embedded_milvus
from search.indexing import versions
from search.models import ImageEmbedding
from search.querying import similar
from search.querying.active import active_forget
from search.vectorstores import get_store
from search.vectorstores.milvus import MilvusStore, collection_name
from search.vectorstores.pgvector import images_write
from tests.factories import ProductFactory, add_image
from tests.imagefactory import image_bytes
from tests.search.workers import ROOT, Worker, wait_for

pytestmark = [pytest.mark.slow]
MILVUS = "search.vectorstores.milvus.MilvusStore"


@pytest.fixture
def embedded_mode(settings, milvus_server, milvus_prefix) -> Iterator[MilvusStore]:  # type: ignore[no-untyped-def]
    """The Milvus store with no URI: the embedded server of the tests' VITRINE_HOME."""
    settings.VITRINE_VECTOR_STORE = MILVUS
    settings.VITRINE_MILVUS_URI = ""
    get_store.cache_clear()
    store = get_store()
    assert isinstance(store, MilvusStore) and store.is_embedded
    yield store
    store.close(quiet=True)
    get_store.cache_clear()


def test_render_config_binds_everything_to_localhost_and_turns_rest_off(tmp_path):
    template = (embedded_milvus._wheel_data() / "config.yaml.template").read_text()
    ports = {key: 40000 + n for n, key in enumerate(embedded_milvus.PORT_KEYS)}
    values: dict[str, object] = {k: v for k, v in ports.items() if k not in ("metrics_port", "etcd_peer_port")}
    values.update(etcd_data_dir=tmp_path / "etcd", local_storage_dir=tmp_path / "data", rocksmq_data_dir=tmp_path,
                  system_log_path=tmp_path / "logs", etcd_log_path="stdout")  # fmt: skip
    text = embedded_milvus.render_config(template, values, etcd_config=tmp_path / "embedEtcd.yaml")
    assert "{{" not in text and "localhost:" not in text
    assert f"port: {ports['proxy_port']}" in text and f"127.0.0.1:{ports['etcd_port']}" in text
    assert f"path: {tmp_path / 'embedEtcd.yaml'}" in text
    assert "\n  http:\n    enabled: false" in text
    assert "gracefulStopTimeout: 1800" not in text
    assert "authorizationEnabled: true" in text and "authorizationEnabled: false" not in text


def test_embedded_server_admits_only_this_homes_password(milvus_server):
    """Authentication is on and root's well-known default password is gone: no password, the default one or a wrong
    one is refused; the home's password (a file only its user can read) is let in."""
    import grpc
    from pymilvus import MilvusClient, MilvusException

    assert milvus_server.password_path.stat().st_mode & 0o777 == 0o600
    for token in ("", "root:Milvus", "root:not-the-password"):
        with pytest.raises((MilvusException, grpc.RpcError)) as refused:
            MilvusClient(uri=milvus_server.uri, token=token, timeout=10).list_collections()
        assert embedded_milvus._refused(refused.value), refused.value
    client = MilvusClient(uri=milvus_server.uri, token=milvus_server.token, timeout=10)
    try:
        assert isinstance(client.list_collections(), list)
    finally:
        client.close()


@pytest.mark.django_db
def test_embedded_server_is_shared_counted_and_shown(embedded_mode, milvus_server, capsys):
    """Another process of the home holds the same server (same URI); status shows it with its users."""
    embedded_mode.client.list_collections()  # connects: this process now holds a handle
    code = ("import sys; from pathlib import Path; from config import embedded_milvus as m; "
            "s = m.milvus(Path(sys.argv[1])); s.ensure_running(); print(s.uri, flush=True); "
            "sys.stdin.read()")  # fmt: skip
    other = subprocess.Popen([sys.executable, "-c", code, str(settings.VITRINE_HOME)], cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == milvus_server.uri == embedded_mode.uri
        assert {os.getpid(), other.pid} <= set(milvus_server.users())
        call_command("embedded", "status")
        shown = capsys.readouterr().out
        assert "milvus    running (" in shown and milvus_server.uri in shown
        # Milvus 2.3.5 listens on every interface (no setting binds it to 127.0.0.1): said, with the ports.
        exposed = milvus_server.exposed_ports()
        assert (
            milvus_server.port in exposed
            and f"ports listen on every interface: {', '.join(map(str, exposed))}" in shown
        )
    finally:
        other.communicate("", timeout=60)  # it leaves: its handle goes, the server stays for us
    assert other.returncode == 0
    assert other.pid not in milvus_server.users() and milvus_server.is_running()


@pytest.mark.django_db(transaction=True)
def test_worker_writes_milvus_while_the_web_reads_it(embedded_mode, milvus_prefix, _media_root):
    """A real Celery worker embeds uploads into Postgres and the shared Milvus server while this process (the web)
    keeps searching it: every read answers, and the uploads become similar to each other through Milvus."""
    settings.VITRINE_ENABLED_SPACES = ["pixels"]
    env = {"VITRINE_VECTOR_STORE": MILVUS, "VITRINE_MILVUS_URI": "", "VITRINE_MILVUS_PREFIX": milvus_prefix}
    worker = Worker(home=settings.VITRINE_HOME, media_root=_media_root, spaces="pixels", name="milvus", env=env)
    try:
        first = catalog_services.product_create(title="Red kettle")
        catalog_services.product_image_add(product=first, file=image_bytes(size=(160, 120), color=(200, 30, 30)))
        wait_for(lambda: ImageEmbedding.objects.filter(image__product=first, status="ok").exists(), 60)
        errors: list[BaseException] = []
        reads = [0]
        stop = threading.Event()

        def read() -> None:
            from django.db import connection

            try:
                while not stop.is_set():
                    similar.similar_products(product=first, k=5, space="pixels")
                    reads[0] += 1
            except BaseException as exc:
                errors.append(exc)
            finally:
                connection.close()

        reader = threading.Thread(target=read)
        reader.start()
        others = []
        for n in range(6):
            product = catalog_services.product_create(title=f"Kettle {n}")
            colour = (200 - n * 5, 30 + n * 4, 30)
            catalog_services.product_image_add(product=product, file=image_bytes(size=(160, 120), color=colour))
            others.append(product.pk)
        wait_for(lambda: ImageEmbedding.objects.filter(image__product_id__in=others, status="ok").count() == 6, 90)
        # Milvus (not Postgres) answers: every upload is found, within Session consistency's second or so.
        wait_for(lambda: {h.product_id for h in similar.similar_products(product=first, k=10, space="pixels")}
                 == set(others), 30, "Milvus to serve the worker's vectors")  # fmt: skip
        stop.set()
        reader.join(30)
        assert errors == [] and reads[0] > 0
        name = collection_name("pixels", ImageEmbedding.objects.filter(space="pixels").first().model_version)
        assert embedded_mode.client.query(name, filter="id >= 0", output_fields=["count(*)"],
                                          consistency_level="Strong")[0]["count(*)"] == 7  # fmt: skip
    finally:
        worker.stop()


SPACE, VERSION, DIM = "cnn", "fault-v1", 16


def _milvus_count(store: MilvusStore) -> int:
    name = collection_name(SPACE, VERSION)
    rows = store.client.query(name, filter="id >= 0", output_fields=["count(*)"], consistency_level="Strong")
    return int(rows[0]["count(*)"])


@pytest.mark.django_db(transaction=True)
def test_milvus_killed_mid_reindex_loses_nothing_answers_503_and_catches_up(embedded_mode, milvus_server, client):
    """A reindex writes chunks (Postgres first, then Milvus, as the worker's chunks do); the server is SIGKILLed
    half-way. Postgres keeps every vector; a search answers 503 (and starts the server in the background); the
    failed chunk's retry gets through and Milvus ends equal to Postgres (count and vectors); a rebuild agrees."""
    store = embedded_mode
    images = [add_image(ProductFactory(), color=(n * 6 % 255, 50, 90)) for n in range(40)]
    vectors = np.random.default_rng(7).normal(size=(len(images), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    versions.version_register(space=SPACE, version=VERSION, dimension=DIM)
    chunks = [list(zip([i.pk for i in images[s : s + 8]], vectors[s : s + 8], strict=True)) for s in range(0, 40, 8)]
    for chunk in chunks[:2]:
        store.upsert_images(space=SPACE, version=VERSION, items=chunk)
    state = milvus_server._state()
    assert state is not None
    os.kill(int(str(state["pid"])), signal.SIGKILL)  # the server dies in the middle of the reindex
    wait_for(lambda: not milvus_server.is_running(), 30, "the server to be gone")
    with pytest.raises(Exception):  # noqa: B017 - whatever pymilvus raises; the task retries the chunk
        store.upsert_images(space=SPACE, version=VERSION, items=chunks[2])
    # Nothing lost: the chunk's vectors are in Postgres, the source of truth.
    assert ImageEmbedding.objects.filter(space=SPACE, model_version=VERSION, status="ok").count() == 24
    for chunk in chunks[3:]:  # the other chunks' tasks: Postgres, then Milvus once it is back
        images_write(space=SPACE, version=VERSION, items=chunk)
    active_forget()  # the first version of a space is active at once
    # Milvus down: the shopper's API answers a clear 503, not a 500, and says nothing of the machinery.
    url = reverse("search:api_similar", args=[images[0].product_id]) + f"?space={SPACE}"
    response = client.get(url)
    assert response.status_code == 503, response.content
    assert "try again" in response.json()["error"] and "milvus" not in response.content.decode().lower()
    # The retries (the worker's, of the failed chunks): they wait for the server the read started, or start it.
    started = time.monotonic()
    for chunk in chunks[2:]:
        store.upsert_images(space=SPACE, version=VERSION, items=chunk)
    print(f"caught up {time.monotonic() - started:.1f} s after the first retry")
    assert milvus_server.is_running()
    assert ImageEmbedding.objects.filter(space=SPACE, model_version=VERSION, status="ok").count() == 40
    assert _milvus_count(store) == 40
    name = collection_name(SPACE, VERSION)
    sample = [images[n].pk for n in (0, 9, 17, 33)]
    got = {r["id"]: r["vector"] for r in store.client.query(name, filter=f"id in {sample}", output_fields=["vector"],
                                                             consistency_level="Strong")}  # fmt: skip
    for pk in sample:
        stored = ImageEmbedding.objects.get(image_id=pk, space=SPACE, model_version=VERSION).vector
        np.testing.assert_allclose(np.asarray(got[pk], dtype=np.float32), np.asarray(stored), atol=1e-6)
    wait_for(lambda: client.get(url).status_code == 200, 60, "search to answer again")
    call_command("vectorstore_rebuild", stdout=StringIO())
    assert _milvus_count(store) == 40
    hits = store.nearest_images(space=SPACE, version=VERSION, dimension=DIM, vector=vectors[3], k=1)
    assert [h.image_id for h in hits] == [images[3].pk]


@pytest.mark.django_db
def test_a_process_first_read_starts_the_server_and_waits_for_it(embedded_mode, milvus_server):
    """A command that only reads (tune_search, evaluate) in a process that never reached the server starts it and
    waits: only a process that was connected (a web worker) answers 503 while the server comes back."""
    assert milvus_server.stop(force=True)
    fresh = MilvusStore()
    assert fresh.nearest_images(space="cnn", version="never-made", dimension=4, vector=np.ones(4), k=3) == []
    assert milvus_server.is_running() and os.getpid() in milvus_server.users()
    fresh.close()
