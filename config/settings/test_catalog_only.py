"""Tests of the catalogue alone: the ``search`` app is not installed (tests/test_catalog_without_search.py).

The catalogue must work without search: it announces its changes as signals nobody may be listening to, and
its pages ask ``catalog.hooks`` for panels rather than loading search's template tags. Its own database, so its
schema (no search tables) never meets the full suite's.
"""

from .test import *  # noqa: F403
from .test import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "search"]
# A copy: the dict imported from .test is that module's own, and must stay as it is.
DATABASES = {"default": {**DATABASES["default"], "NAME": f"{DATABASES['default']['NAME']}_catalog_only"}}
CELERY_BEAT_SCHEDULE: dict[str, object] = {}  # type: ignore[no-redef]
