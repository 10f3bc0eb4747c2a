"""Vector stores behind one small interface; the one in use is ``settings.VITRINE_VECTOR_STORE``."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from search.vectorstores.base import Filters, ImageHit, StoreUnavailable, VectorStore

__all__ = ["Filters", "ImageHit", "StoreUnavailable", "VectorStore", "get_store"]


@cache
def get_store() -> VectorStore:
    try:
        cls = import_string(settings.VITRINE_VECTOR_STORE)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"VITRINE_VECTOR_STORE: cannot import {settings.VITRINE_VECTOR_STORE}: {exc}"
        ) from exc
    store: VectorStore = cls()
    return store
