"""`benchmark --memory`: the shop's own processes, started for real, measured after warm-up and after a reindex."""

from __future__ import annotations

import pytest

from catalog import services as catalog_services
from search.indexing import versions
from search.lab.benchmarks import memory
from tests.imagefactory import image_bytes

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_memory_benchmark_measures_every_process_and_none_carries_torch(settings, monkeypatch):
    """With the exports made beforehand (as `rundemo` does), no web worker and no Celery process imports PyTorch,
    not even for a space that turns out unavailable (a SimCLR checkpoint that cannot be fetched)."""
    monkeypatch.setenv("VITRINE_ENABLED_SPACES", "pixels,cnn,text,simclr")
    monkeypatch.setenv("VITRINE_SIMCLR_CHECKPOINT", "http://127.0.0.1:9/simclr.ckpt")
    settings.VITRINE_ENABLED_SPACES = ["pixels", "cnn", "text"]
    settings.VITRINE_PRIMARY_IMAGE_SPACE = "cnn"
    for i in range(3):
        product = catalog_services.product_create(title=f"Red kettle {i}", description="Enamel, 1.5 litres")
        catalog_services.product_image_add(product=product, file=image_bytes(size=(200, 160), color=(200, 40 * i, 9)))
    versions.spaces_prepare(log=lambda line: None)  # exported here, before the processes start
    settings.VITRINE_ENABLED_SPACES = ["pixels", "cnn", "text", "simclr"]
    lines: list[str] = []
    figures = memory.memory_benchmark(web_workers=1, rounds=2, log=lines.append)
    for moment in ("after_warm_up", "after_reindex"):
        roles = figures[moment]
        assert set(roles) == {"web master", "web worker 1", "worker main", "worker pool 1"}, "\n".join(lines)
        assert all(row["rss_mb"] > 0 and 0 < row["uss_mb"] <= row["rss_mb"] for row in roles.values())
        assert [role for role, row in roles.items() if row["torch"]] == [], "\n".join(lines)
        assert roles["web worker 1"]["onnxruntime"] and roles["worker pool 1"]["onnxruntime"]
    assert figures["reindexed"] == ["pixels", "cnn", "text"]
    table = memory.format_table(figures)
    assert table[0].split()[:3] == ["process", "warm", "MB"] and any(row.startswith("worker pool 1") for row in table)
