"""Development and demo: safe defaults for a single machine."""

from .base import *  # noqa: F403
from .base import env, env_bool

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env("SECRET_KEY", "vitrine-local-development-key-not-for-production")
VITRINE_SERVE_MEDIA = env_bool("VITRINE_SERVE_MEDIA", True)
# No collectstatic needed: WhiteNoise serves straight from the finders.
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
