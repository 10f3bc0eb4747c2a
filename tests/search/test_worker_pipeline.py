"""The on-upload path end to end: a real Celery worker on the real (embedded) Redis, real Postgres."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core.files.storage import default_storage

from catalog import services as catalog_services
from search.models import ImageColour, ImageEmbedding, ProductEmbedding, SpaceState
from search.querying import similar
from tests.imagefactory import image_bytes
from tests.search.workers import Worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SPACES = "pixels,cnn,text"


@pytest.fixture
def worker(settings, _media_root) -> Iterator[Worker]:  # type: ignore[no-untyped-def]
    settings.VITRINE_ENABLED_SPACES = SPACES.split(",")
    process = Worker(home=settings.VITRINE_HOME, media_root=_media_root, spaces=SPACES)
    yield process
    process.stop()


def test_upload_is_embedded_by_the_worker_and_becomes_searchable(worker):
    product = catalog_services.product_create(title="Red kettle", description="Enamel, 1.5 litres")
    image = catalog_services.product_image_add(product=product, file=image_bytes(size=(200, 160)))
    other = catalog_services.product_create(title="Blue kettle")
    catalog_services.product_image_add(product=other, file=image_bytes(size=(200, 160), color=(20, 40, 200)))

    wait_for(lambda: ImageEmbedding.objects.filter(image__product__in=[product, other], status="ok").count() == 4, 30)
    vectors = {(row.space, row.image_id): row for row in ImageEmbedding.objects.all()}
    assert len(vectors[("cnn", image.pk)].vector) == 1280 and len(vectors[("pixels", image.pk)].vector) == 3072
    wait_for(lambda: ProductEmbedding.objects.filter(product__in=[product, other], space="text").count() == 2)
    # The worker's probe recorded what it could load.
    wait_for(lambda: SpaceState.objects.filter(key__in=SPACES.split(","), available=True).count() == 3)
    hits = similar.similar_products(product=product, k=5, space="cnn")
    assert [h.product_id for h in hits] == [other.pk]
    # The worker named each picture's colours while it embedded it (once, whichever space came first).
    wait_for(lambda: ImageColour.objects.filter(image__product__in=[product, other]).count() == 2)
    assert ImageColour.objects.get(image=image).names[0] == "red"
    assert ImageColour.objects.get(image__product=other).names[0] == "blue"


def test_an_image_that_cannot_be_read_ends_failed_with_its_reason(worker):
    product = catalog_services.product_create(title="Ghost lamp")
    data = image_bytes()
    # The file disappears between the upload and the worker (e.g. storage trouble).
    from django.db import transaction

    with transaction.atomic():
        image = catalog_services.product_image_add(product=product, file=data)
        default_storage.delete(image.file.name)
    wait_for(lambda: ImageEmbedding.objects.filter(image=image, space="cnn", status="failed").exists())
    row = ImageEmbedding.objects.get(image=image, space="cnn")
    assert "missing from storage" in row.error
    assert settings.VITRINE_EMBED_MAX_ATTEMPTS >= 1


def test_worker_comes_back_after_redis_restarts_and_nothing_is_lost(worker, settings):
    from config import embedded

    redis_server = embedded.redis(settings.VITRINE_HOME)
    assert redis_server.stop(force=True)  # the broker dies under a running worker
    time.sleep(1.0)
    started = time.monotonic()
    # Publishing starts the embedded broker again (its data on disk); the worker must reconnect by itself.
    product = catalog_services.product_create(title="Phoenix mug")
    image = catalog_services.product_image_add(product=product, file=image_bytes(size=(120, 90)))
    wait_for(lambda: ImageEmbedding.objects.filter(image=image, space="cnn", status="ok").exists(), 60)
    elapsed = time.monotonic() - started
    print(f"consumed again {elapsed:.1f} s after the broker came back")
    assert elapsed < 30  # the bound
    assert ImageEmbedding.objects.filter(image=image).count() == 2  # pixels and cnn, once each
