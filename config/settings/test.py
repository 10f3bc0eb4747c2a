"""Tests: real Postgres+pgvector and Redis (embedded unless given in the environment)."""

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = env("SECRET_KEY", "vitrine-test-key")
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
VITRINE_SERVE_MEDIA = True
# Offline: the published SimCLR checkpoint can never be fetched, so tests give the space a checkpoint explicitly.
VITRINE_SPACES["simclr"]["OPTIONS"]["PUBLISHED_CHECKPOINT"] = ""  # noqa: F405
# Recorded searches are written as each response closes, so a test reads them at once (the batching thread of
# search.assistants.insight_buffer has tests of its own).
VITRINE_INSIGHT_FLUSH_S = 0.0
