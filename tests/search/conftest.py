from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config import embedded_milvus
from config.embedded_milvus import EmbeddedMilvus
from search import embedders
from search.vectorstores import get_store
from tests.search.tinymodels import build_tiny_clip, write_bolts_simclr_checkpoint


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def simclr_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("simclr") / "simclr.ckpt"
    weights = write_bolts_simclr_checkpoint(path, seed=3)
    return path, weights


@pytest.fixture
def use_spaces(settings) -> Iterator[Callable[..., None]]:  # type: ignore[no-untyped-def]
    """Enable some spaces (and override options) for one test; models reload afterwards as configured."""
    customised: set[str] = set()

    def configure(*keys: str, **options: dict) -> None:
        spaces = copy.deepcopy(settings.VITRINE_SPACES)
        for key, extra in options.items():
            spaces[key].setdefault("OPTIONS", {}).update(extra)
        settings.VITRINE_SPACES = spaces
        settings.VITRINE_ENABLED_SPACES = list(keys)
        for key in options:
            embedders._instances.pop(key, None)
            customised.add(key)
        embedders._failures.clear()

    yield configure
    for key in list(embedders._instances):
        # Keep the default real models warm across tests; drop anything built from test options.
        if key in customised or key not in ("pixels", "cnn", "text"):
            embedders._instances.pop(key)
    embedders._failures.clear()
    get_store.cache_clear()


STORES = {
    "pgvector": "search.vectorstores.pgvector.PgVectorStore",
    "milvus": "search.vectorstores.milvus.MilvusStore",
    "milvus-server": "search.vectorstores.milvus.MilvusStore",
}


@pytest.fixture(scope="session")
def milvus_server() -> Iterator[EmbeddedMilvus]:
    """The embedded Milvus standalone server of the tests' VITRINE_HOME, started once for the whole session (the
    worker processes of the pipeline tests share it, as the demo's do); stopped by the last process out."""
    from django.conf import settings

    server = embedded_milvus.milvus(Path(settings.VITRINE_HOME))
    server.ensure_running()
    yield server
    server.release()


@pytest.fixture
def milvus_prefix(settings, milvus_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Collections of their own for one test on the shared server (a unique prefix), dropped afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    settings.VITRINE_MILVUS_PREFIX = prefix
    yield prefix
    if not milvus_server.is_running():
        return  # a test that stopped the server leaves nothing to drop
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_server.uri, token=milvus_server.token, timeout=30)
    try:
        for name in client.list_collections():
            if name.startswith(prefix + "_"):
                client.drop_collection(name)
    finally:
        client.close()


@pytest.fixture(params=list(STORES))
def vector_store(request, settings, tmp_path):  # type: ignore[no-untyped-def]
    """The same test against each vector store: pgvector, Milvus in a fresh milvus-lite file, and the embedded
    Milvus server (shared by the session; collections of the test's own)."""
    settings.VITRINE_VECTOR_STORE = STORES[request.param]
    settings.VITRINE_MILVUS_URI = str(tmp_path / "milvus.db")
    if request.param == "milvus-server":
        server = request.getfixturevalue("milvus_server")
        settings.VITRINE_MILVUS_URI, settings.VITRINE_MILVUS_TOKEN = server.uri, server.token
        request.getfixturevalue("milvus_prefix")
    get_store.cache_clear()
    store = get_store()
    yield store
    close = getattr(store, "close", None)
    if close is not None:
        close()
    get_store.cache_clear()
