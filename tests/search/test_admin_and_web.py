from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from search import embedders
from search.indexing import bulk, jobs, versions
from search.models import ReindexJob, SpaceState
from tests.factories import ProductFactory, add_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_spaces_page_lists_every_space_with_counts_and_reasons(staff_client, use_spaces):
    use_spaces("pixels", "simclr", simclr={"CHECKPOINT": ""})
    for _ in range(3):
        add_image(ProductFactory())
    bulk.images_embed_bulk(space="pixels")
    with pytest.raises(embedders.SpaceUnavailable):
        versions.space_load("simclr")
    response = staff_client.get(reverse("admin:search_spacestate_changelist"))
    html = response.content.decode()
    assert response.status_code == 200
    for key in ("pixels", "cnn", "simclr", "clip", "text"):
        assert f">{key}<" in html
    assert "3 / 0 / 0 / 0 of 3" in html
    assert "no SimCLR checkpoint configured" in html


@pytest.mark.django_db
def test_space_page_buttons_queue_jobs_and_show_progress(staff_client, use_spaces):
    use_spaces("pixels")
    add_image(ProductFactory())
    response = staff_client.get(reverse("admin:search_spacestate_changelist"))
    state = SpaceState.objects.get(key="pixels")
    url = reverse("admin:search_spacestate_change", args=[state.pk])
    page = staff_client.get(url)
    assert page.status_code == 200 and "Reindex all" in page.content.decode()
    staff_client.post(reverse("admin:search_spacestate_reindex", args=[state.pk]), {"missing_only": "1"})
    job = ReindexJob.objects.get()
    assert job.space == "pixels" and job.missing_only and job.status == "queued"
    assert 'http-equiv="refresh"' in staff_client.get(url).content.decode()  # refreshes while a job runs
    jobs.reindex_job_run(job_id=job.pk)
    page = staff_client.get(url).content.decode()
    assert "1/1" in page and "done" in page and 'http-equiv="refresh"' not in page
    assert response.status_code == 200
    listing = staff_client.get(reverse("admin:search_reindexjob_changelist"))
    assert listing.status_code == 200 and "1/1" in listing.content.decode()


@pytest.mark.django_db
def test_product_admin_action_reindexes_selected_products(staff_client, use_spaces):
    use_spaces("pixels", "cnn")
    products = [ProductFactory() for _ in range(3)]
    staff_client.post(reverse("admin:catalog_product_changelist"),
                      {"action": "reindex", "_selected_action": [p.pk for p in products[:2]]})  # fmt: skip
    queued = ReindexJob.objects.order_by("space")
    assert [j.space for j in queued] == ["cnn", "pixels"]
    assert all(sorted(j.product_ids) == sorted(p.pk for p in products[:2]) for j in queued)


@pytest.mark.django_db(transaction=True)
def test_pages_that_embed_nothing_never_import_torch(django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-boss-123")
    product = ProductFactory()
    add_image(product)
    code = f"""
import sys, django
django.setup()
from django.test import Client
from django.contrib.auth import get_user_model
client = Client()
for url in ["/", "/products/", "/products/{product.slug}/", "/search/", "/search/photo/", "/api/schema"]:
    assert client.get(url).status_code == 200, url
client.force_login(get_user_model().objects.get(pk={user.pk}))
for url in ["/admin/search/spacestate/", "/admin/search/reindexjob/", "/admin/search/rankingweights/",
            "/admin/catalog/product/", "/staff/upload/"]:
    assert client.get(url).status_code == 200, url
heavy = sorted(m for m in ("torch", "torchvision", "sentence_transformers", "transformers") if m in sys.modules)
print("heavy:", heavy)
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
           "VITRINE_DB_NAME": connection.settings_dict["NAME"], "ALLOWED_HOSTS": "testserver"}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "heavy: []" in result.stdout


def _unavailable(key: str, reason: str) -> SpaceState:
    from django.utils import timezone

    state, _ = SpaceState.objects.update_or_create(key=key, defaults={"available": False, "reason": reason,
                                                                       "checked_at": timezone.now()})  # fmt: skip
    return state


@pytest.mark.django_db
def test_a_space_whose_model_is_unavailable_cannot_be_reindexed(staff_client, use_spaces):
    use_spaces("pixels", "clip")
    add_image(ProductFactory())
    state = _unavailable("clip", "clip-ViT-B-32 is not in the local Hugging Face cache")
    page = staff_client.get(reverse("admin:search_spacestate_change", args=[state.pk])).content.decode()
    assert page.count('disabled title="Its model is unavailable: clip-ViT-B-32 is not in the local') == 2
    assert "Reindexing is off: Its model is unavailable" in page
    response = staff_client.post(reverse("admin:search_spacestate_reindex", args=[state.pk]), {"missing_only": "0"})
    assert response.status_code == 302 and not ReindexJob.objects.exists()
    listing = staff_client.get(reverse("admin:search_spacestate_changelist")).content.decode()
    assert "model unavailable" in listing and "not checked yet" in listing  # clip tried; the others never
    # Neither the product action nor the sweep queues work for it.
    staff_client.post(reverse("admin:catalog_product_changelist"),
                      {"action": "reindex", "_selected_action": [ProductFactory().pk]})  # fmt: skip
    assert list(ReindexJob.objects.values_list("space", flat=True)) == ["pixels"]


@pytest.mark.django_db
def test_product_page_shows_each_images_state_per_space_and_re_embeds(staff_client, use_spaces):
    from search.indexing.embedding import image_failure_record
    from tests.search.workers import take_queued

    use_spaces("pixels", "cnn", "clip")
    product = ProductFactory()
    fine, broken = add_image(product), add_image(product)
    bulk.images_embed_bulk(space="pixels", image_ids=[fine.pk])
    versions.space_load("cnn")
    image_failure_record(image_id=broken.pk, space="pixels", version=embedders.load("pixels").version,
                         reason="ImageUnreadable: missing from storage")  # fmt: skip
    _unavailable("clip", "no weights here")
    take_queued()
    html = staff_client.get(reverse("admin:catalog_product_change", args=[product.pk])).content.decode()
    assert '<span class="vitrine-ok">pixels: ok</span>' in html
    assert '<span class="vitrine-bad">pixels: failed</span><span class="reason">ImageUnreadable: missing from ' in html
    assert html.count('<span class="vitrine-wait">cnn: pending</span>') == 2
    assert html.count('<span class="vitrine-muted">clip: model unavailable</span>') == 2
    assert html.count('formaction="/admin/search/spacestate/images/') == 2
    response = staff_client.post(reverse("admin:search_image_reembed", args=[broken.pk]), {"title": "ignored"})
    assert response.status_code == 302 and response["Location"].endswith(f"/catalog/product/{product.pk}/change/")
    queued = take_queued()
    assert sorted(args[1] for _, args in queued) == ["cnn", "pixels"]  # not clip: its model is unavailable
    assert all(name == "search.tasks.image_embed_task" and args[0] == broken.pk for name, args in queued)
