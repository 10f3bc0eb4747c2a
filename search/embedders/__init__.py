"""The registry of embedding spaces, configured by ``settings.VITRINE_SPACES``.

Each entry names an embedder class by dotted path (imported lazily) and its
options. ``VITRINE_ENABLED_SPACES`` picks which run; ``VITRINE_PRIMARY_IMAGE_SPACE``
is the one shoppers' "similar products" use when it is available.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from search.embedders.base import IMAGE, TEXT, Embedder, SpaceUnavailable

__all__ = ["IMAGE", "TEXT", "Embedder", "SpaceUnavailable", "enabled", "get", "image_spaces", "text_spaces"]

_instances: dict[str, Embedder] = {}
_failures: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()
# How long a process trusts "unavailable" before trying to load a space again.
RECHECK_SECONDS = 300


def _config(key: str) -> dict[str, Any]:
    spaces = settings.VITRINE_SPACES
    if key not in spaces:
        raise KeyError(f"unknown space {key!r}; known: {', '.join(spaces)}")
    return dict(spaces[key])


def enabled() -> list[str]:
    """Enabled space keys, in settings order."""
    wanted = settings.VITRINE_ENABLED_SPACES
    unknown = [key for key in wanted if key not in settings.VITRINE_SPACES]
    if unknown:
        raise ImproperlyConfigured(f"VITRINE_ENABLED_SPACES names unknown spaces: {', '.join(unknown)}")
    return [key for key in settings.VITRINE_SPACES if key in wanted]


def get(key: str) -> Embedder:
    """The process-wide embedder for ``key`` (not loaded yet; call ``load()``)."""
    with _lock:
        if key not in _instances:
            config = _config(key)
            try:
                cls = import_string(config.pop("BACKEND"))
            except ImportError as exc:
                raise ImproperlyConfigured(f"space {key}: cannot import its backend: {exc}") from exc
            _instances[key] = cls(key, config.get("OPTIONS", {}))
        return _instances[key]


def variant(key: str, **options: Any) -> Embedder:
    """A private, loaded instance of ``key`` with some options replaced (e.g. ``RUNTIME="torch"``).

    For side-by-side measurements; the process-wide instance that :func:`get` returns is left alone.
    """
    configured = get(key)
    embedder = type(configured)(key, {**configured.options, **options})
    embedder.load()
    return embedder


def modalities(key: str) -> frozenset[str]:
    """What a space embeds, from its class alone (no model is loaded)."""
    cls = import_string(_config(key)["BACKEND"])
    return frozenset(cls.modalities)


def image_spaces() -> list[str]:
    return [key for key in enabled() if IMAGE in modalities(key)]


def is_text_only(key: str) -> bool:
    """A space whose vectors belong to products (their title + description), not to images."""
    return modalities(key) == frozenset({TEXT})


def text_spaces() -> list[str]:
    """Spaces that embed product text (title + description), i.e. text-only spaces."""
    return [key for key in enabled() if is_text_only(key)]


def load(key: str) -> Embedder:
    """Load ``key`` once per process; remember failures for a while instead of retrying every call."""
    failure = _failures.get(key)
    if failure and time.monotonic() - failure[0] < RECHECK_SECONDS:
        raise SpaceUnavailable(failure[1])
    embedder = get(key)
    try:
        embedder.load()
    except SpaceUnavailable as exc:
        _failures[key] = (time.monotonic(), exc.reason)
        raise
    except Exception as exc:  # a model that crashes while loading is unavailable, not fatal
        reason = f"loading failed: {type(exc).__name__}: {str(exc)[:300]}"
        _failures[key] = (time.monotonic(), reason)
        raise SpaceUnavailable(reason) from exc
    _failures.pop(key, None)
    return embedder


def reset() -> None:
    """Forget loaded models and failures (tests, settings changes)."""
    with _lock:
        _instances.clear()
        _failures.clear()
