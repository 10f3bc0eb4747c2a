"""A synthetic catalogue at scale: clustered unit vectors like a shop's embeddings, for load tests and the
vector-store benchmark."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from PIL import Image

from catalog import services as catalog_services
from catalog.imaging import derivative_jpeg
from catalog.models import Product, ProductImage
from search.models import SpaceState, SpaceVersion
from search.querying.active import active_forget
from search.vectorstores import get_store
from search.vectorstores.pgvector import images_copy, products_copy_fresh

TEXT_SPACE = "text"  # the space hybrid "Looks similar" reads words from


def cluster_centers(rng: np.random.Generator, *, clusters: int, dimension: int) -> np.ndarray:
    centers = rng.normal(size=(clusters, dimension)).astype(np.float32)
    return centers / np.linalg.norm(centers, axis=1, keepdims=True)


def clustered_vectors(rng: np.random.Generator, *, centers: np.ndarray, n: int, spread: float = 0.9,
                      assigned: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``n`` unit vectors around random ``centers`` (and which centre each came from), like a shop's embeddings;
    ``assigned`` picks each one's centre instead.

    The noise has norm ≈ ``spread`` (cosine ≈ 0.74 to the centre at 0.9), so a cluster's members are about
    as close to each other as to many of their neighbours: approximate search has real work to do.
    """
    cluster = rng.integers(0, len(centers), n) if assigned is None else assigned
    dimension = centers.shape[1]
    vectors = centers[cluster] + rng.normal(size=(n, dimension)).astype(np.float32) * (spread / np.sqrt(dimension))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), cluster


def seed_synthetic(*, count: int, dimension: int = 512, space: str = "clip", clusters: int = 200,
                   categories: int = 20, text_dimension: int = 0,
                   progress: Callable[[int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """A synthetic catalogue: ``count`` products, one image row each, clustered unit vectors in ``space``.

    The image rows share one real image file (so product pages render); the vectors come
    from ``clusters`` Gaussian clusters spread over ``categories`` categories, like the
    embeddings of a real shop. The space is recorded as available with this version active.
    ``text_dimension``: also a vector per product in the ``text`` space (for hybrid "Looks similar"): products that
    look alike are described alike, so each image cluster has a text cluster of its own, around centres of its own.
    """
    if Product.objects.exists():
        raise ValueError("seed_synthetic wants an empty catalogue: use a fresh VITRINE_HOME")
    rng = np.random.default_rng(42)
    cats = [catalog_services.category_from_path(path=f"Synthetic {i:02d}") for i in range(categories)]
    template = catalog_services.product_create(title="Synthetic template", is_active=False)
    picture = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    shared = catalog_services.product_image_add(product=template, file=derivative_jpeg(picture, max_side=160))
    centers = cluster_centers(rng, clusters=clusters, dimension=dimension)
    version = f"synthetic-{dimension}d"
    text_rng = np.random.default_rng(43)  # apart, so the image vectors stay what they were without text
    text_centers = cluster_centers(text_rng, clusters=clusters, dimension=text_dimension or 1)
    text_version = f"synthetic-text-{text_dimension}d"
    batch = 5000
    for start in range(0, count, batch):
        n = min(batch, count - start)
        vectors, cluster = clustered_vectors(rng, centers=centers, n=n)
        with transaction.atomic():
            products = Product.objects.bulk_create([
                Product(title=f"Synthetic product {start + i}", slug=f"synthetic-{start + i}",
                        sku=f"SYN-{start + i:08d}", price=round(float(rng.uniform(2, 200)), 2),
                        stock=int(rng.integers(0, 20)), category=cats[int(cluster[i]) % categories],
                        currency=str(settings.VITRINE_CURRENCY))
                for i in range(n)
            ])  # fmt: skip
            images = ProductImage.objects.bulk_create([
                ProductImage(product=p, file=shared.file.name, thumbnail=shared.thumbnail.name,
                             display=shared.display.name, checksum=f"{start + i + 1:064x}", format="JPEG",
                             width=shared.width, height=shared.height, is_primary=True)
                for i, p in enumerate(products)
            ])  # fmt: skip
            # A fresh version: binary COPY straight into the table; the index comes once, after the load.
            images_copy(space=space, version=version, items=[(image.pk, vectors[i]) for i, image in enumerate(images)],
                        fresh=True)  # fmt: skip
            if text_dimension:
                texts, _ = clustered_vectors(text_rng, centers=text_centers, n=n, assigned=cluster)
                products_copy_fresh(space=TEXT_SPACE, version=text_version,
                                    items=[(p.pk, texts[i], "synthetic") for i, p in enumerate(products)])  # fmt: skip
        if progress:
            progress(n)
    built = [(space, version, dimension, False)] + ([(TEXT_SPACE, text_version, text_dimension, True)]
                                                      if text_dimension else [])  # fmt: skip
    started = time.perf_counter()
    for key, name, size, products_space in built:
        SpaceVersion.objects.filter(space=key).delete()
        SpaceVersion.objects.create(space=key, version=name, dimension=size, state=SpaceVersion.State.ACTIVE,
                                    activated_at=timezone.now())  # fmt: skip
        state = {"available": True, "reason": "", "model_id": "synthetic", "checked_at": timezone.now()}
        SpaceState.objects.update_or_create(key=key, defaults=state)
        store = get_store()
        store.ensure_version(space=key, version=name, dimension=size, products=products_space)  # sizes the build
        store.rebuild(space=key, version=name, dimension=size, products=products_space)  # Milvus: load, then index
    active_forget()
    return {"products": count, "dimension": dimension, "space": space, "version": version,
            "text": {"space": TEXT_SPACE, "version": text_version, "dimension": text_dimension} if text_dimension
            else None, "index_build_s": time.perf_counter() - started}  # fmt: skip
