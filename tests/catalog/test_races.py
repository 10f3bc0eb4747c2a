"""Busy shops: the same or same-named images uploaded at the same moment, two imports of one folder at once
(issue 14, items 1, 2 and 17). Real concurrent requests against a live server, several rounds each, and
the media check (files against rows) as the last word."""

from __future__ import annotations

import io
import random
import re
import threading
from collections.abc import Callable
from functools import partial
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from PIL import Image

from catalog import media
from catalog.models import Category, Product, ProductImage

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROUNDS = 6


def photo(seed: int, side: int = 1400) -> bytes:
    """A noisy photo: real work for the decoder and encoder, so two requests overlap."""
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


class Staff:
    """A signed-in staff member's browser: its own session cookie and CSRF token, talking HTTP to the server."""

    def __init__(self, base: str, name: str) -> None:
        get_user_model().objects.create_user(name, password="pw-race-123", is_staff=True, is_superuser=True)
        self.base, self.http = base, requests.Session()
        page = self.http.get(f"{base}/admin/login/", timeout=30)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        self.http.post(f"{base}/admin/login/", data={"username": name, "password": "pw-race-123",
                       "csrfmiddlewaretoken": token, "next": "/admin/"}, timeout=30)  # fmt: skip
        page = self.http.get(f"{base}/staff/upload/", timeout=30)
        assert page.status_code == 200, page.status_code
        self.token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]

    def upload(self, name: str, data: bytes) -> requests.Response:
        form = {"mode": "per_image", "csrfmiddlewaretoken": self.token}
        return self.http.post(f"{self.base}/staff/upload/", data=form, files={"images": (name, data, "image/jpeg")},
                              timeout=120)  # fmt: skip


def at_once(*calls: Callable[[], Any], stagger: float = 0.0) -> list[Any]:
    """Run ``calls`` in threads released together; each after a random delay of up to ``stagger`` seconds."""
    barrier, results = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        threading.Event().wait(random.uniform(0, stagger) if i else 0)
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()  # each thread's own database connection

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


def statuses(response: requests.Response) -> list[str]:
    assert response.status_code in (200, 400), (response.status_code, response.text[-1500:])
    return re.findall(r'<tr class="outcome-(\w+)">', response.text)


def assert_files_and_rows_agree(base: str) -> None:
    for image in ProductImage.objects.all():
        for field in (image.file, image.thumbnail, image.display):
            assert requests.get(base + field.url, timeout=30).status_code == 200, field.name
    audit = media.media_audit()  # the media check: no row lacks a file, no file lacks a row
    assert audit.missing == [] and audit.orphans == [], (audit.missing, audit.orphans)


def test_the_same_image_uploaded_twice_at_once_keeps_its_files(live_server):
    """Item 1: the request that lost the race deleted the content-addressed files the winner's row uses."""
    alice, bob = Staff(live_server.url, "alice"), Staff(live_server.url, "bob")
    random.seed(1)
    for round_ in range(ROUNDS):
        data = photo(round_)
        first, second = at_once(partial(alice.upload, "lamp-a.jpg", data), partial(bob.upload, "lamp-b.jpg", data),
                                stagger=0.3)  # fmt: skip
        assert sorted(statuses(first) + statuses(second)) == ["imported", "skipped"], round_
        assert ProductImage.objects.count() == round_ + 1
        assert_files_and_rows_agree(live_server.url)


def test_same_named_images_uploaded_at_once_both_arrive_with_their_own_slugs(live_server):
    """Item 2: two different IMG_0001.jpg uploaded at once: one 500 (catalog_product_slug_key), one image lost."""
    alice, bob = Staff(live_server.url, "alice"), Staff(live_server.url, "bob")
    for round_ in range(ROUNDS):
        one, other = photo(100 + round_, side=600), photo(200 + round_, side=600)
        first, second = at_once(partial(alice.upload, "IMG_0001.jpg", one), partial(bob.upload, "IMG_0001.jpg", other))
        assert statuses(first) == statuses(second) == ["imported"], round_
    slugs = list(Product.objects.values_list("slug", flat=True))
    assert len(slugs) == 2 * ROUNDS == len(set(slugs)) and "img-0001" in slugs
    assert_files_and_rows_agree(live_server.url)


def test_two_imports_of_one_folder_at_once(live_server, tmp_path: Path):
    """Item 2: two import_images runs of one folder: one crashed on catalog_category_slug_key or
    catalog_product_slug_key. Now each image is imported once, each category exists once."""
    for round_ in range(ROUNDS):
        root = tmp_path / f"round-{round_}"
        for i, category in enumerate(["Desk lamps", "Floor lamps", "Desk lamps", "Shades"] * 2):
            folder = root / f"{category} {round_}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"lamp {i}.jpg").write_bytes(photo(1000 * round_ + i, side=500))
        outputs = at_once(partial(_import, root), partial(_import, root))
        assert all(isinstance(out, str) for out in outputs), outputs
        counts = [tuple(map(int, re.findall(r"Imported (\d+) file\(s\), skipped (\d+), failed (\d+)", out)[0]))
                  for out in outputs]  # fmt: skip
        assert sum(imported for imported, _, _ in counts) == 8 and all(failed == 0 for _, _, failed in counts), outputs
    names = list(Category.objects.values_list("name", flat=True))
    assert len(names) == 3 * ROUNDS == len({name.lower() for name in names}), names
    assert ProductImage.objects.count() == 8 * ROUNDS
    assert_files_and_rows_agree(live_server.url)


def _import(root: Path) -> str:
    out = StringIO()
    call_command("import_images", str(root), stdout=out, stderr=StringIO(), no_progress=True)
    return out.getvalue()
