"""How much memory this machine has for us, and the embedded PostgreSQL's shared buffers sized from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connection

from config import memory


def test_a_containers_memory_limit_counts_when_it_is_lower_than_the_machines(tmp_path: Path):
    machine = memory.machine_memory_mb(limit_files=())
    assert machine >= 256
    limit = tmp_path / "memory.max"
    limit.write_text(f"{1 << 30}\n")
    assert memory.machine_memory_mb(limit_files=(str(limit),)) == min(machine, 1024)
    limit.write_text("max\n")  # cgroup v2: no limit
    assert memory.machine_memory_mb(limit_files=(str(limit),)) == machine
    limit.write_text(f"{1 << 50}\n")  # a v1 "no limit" is a huge number: the machine's memory counts
    assert memory.machine_memory_mb(limit_files=(str(tmp_path / "absent"), str(limit))) == machine
    limit.write_text("garbage\n")
    assert memory.machine_memory_mb(limit_files=(str(limit),)) == machine


@pytest.mark.parametrize(("machine_mb", "expected"), [(24105, "6026MB"), (256, "128MB"), (2048, "512MB"),
                                                      (65536, "8192MB")])  # fmt: skip
def test_shared_buffers_are_a_quarter_of_memory_between_128_mb_and_8_gb(monkeypatch, machine_mb, expected):
    monkeypatch.setattr(memory, "machine_memory_mb", lambda: machine_mb)
    assert memory.shared_buffers_default() == expected


@pytest.mark.django_db
def test_the_embedded_postgres_runs_with_those_buffers():
    if os.environ.get("DATABASE_URL") or os.environ.get("VITRINE_PG_SHARED_BUFFERS"):
        pytest.skip("PostgreSQL is not the embedded one, or its buffers are set by hand")
    with connection.cursor() as cursor:
        cursor.execute("SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'")
        assert f"{cursor.fetchone()[0]}MB" == memory.shared_buffers_default()
