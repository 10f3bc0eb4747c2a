"""/healthz (the process answers) and /readyz (what it depends on answers)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache

HEARTBEAT_PREFIX = "vitrine:worker-heartbeat:"
HEARTBEAT_TTL = 45


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _may_see_details(request: HttpRequest) -> bool:
    """Staff, or a probe holding ``VITRINE_READYZ_TOKEN`` (``Authorization: Bearer …``). Others learn only
    ready or not: host names and model errors (file paths, versions) are nobody else's business."""
    token = settings.VITRINE_READYZ_TOKEN
    given = request.headers.get("Authorization", "")
    if token and given.startswith("Bearer ") and constant_time_compare(given.removeprefix("Bearer "), token):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_staff)


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Database, broker, worker heartbeats and each space's model state. 503 when a hard dependency is down;
    a space that is unavailable is reported but does not make the shop unready (search degrades).
    Anonymous callers get only ``{"ready": …}``; staff and token holders get every check."""
    checks: dict[str, Any] = {}
    ready = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True}
    except Exception as exc:
        checks["database"] = {"ok": False, "error": str(exc)[:200]}
        ready = False
    workers: list[dict[str, Any]] = []
    try:
        from config.ratelimit import redis_client

        client = redis_client()
        client.ping()
        checks["broker"] = {"ok": True}
        for key in client.scan_iter(f"{HEARTBEAT_PREFIX}*", count=100):
            raw = client.get(key)
            if raw:
                beat = json.loads(raw)
                workers.append({"name": beat["name"], "seconds_ago": round(time.time() - beat["at"], 1)})
    except Exception as exc:
        checks["broker"] = {"ok": False, "error": str(exc)[:200]}
        ready = False
    checks["workers"] = {"ok": bool(workers), "alive": workers}
    status = 200 if ready else 503
    if not _may_see_details(request):
        return JsonResponse({"ready": ready}, status=status)
    if checks["database"]["ok"]:
        checks["media"] = _media_check()
    if checks["database"]["ok"] and apps.is_installed("search"):
        from search.models import SpaceState

        states = {s.key: s for s in SpaceState.objects.all()}
        checks["spaces"] = {
            key: {"available": bool(states.get(key) and states[key].available),
                  "reason": states[key].reason if key in states else "not checked yet"}
            for key in settings.VITRINE_ENABLED_SPACES
        }  # fmt: skip
    return JsonResponse({"ready": ready, "checks": checks}, status=status)


def _media_check() -> dict[str, Any]:
    """Image rows whose files are missing and files no row references (``manage.py media_check``), from an
    audit at most five minutes old: it walks the media folders, too much for every probe."""
    from catalog import media

    audit = media.media_audit_recent(max_age_s=300)
    return {"ok": not audit.missing, "missing_files": len(audit.missing), "orphan_files": len(audit.orphans),
            "orphan_bytes": audit.orphan_bytes, "checked_at": audit.checked_at.isoformat(),
            "missing": [vars(row) for row in audit.missing[:20]]}  # fmt: skip


def wait_until_answers(url: str, *, timeout: float = 60.0, keep_waiting: Callable[[], bool] = lambda: True) -> bool:
    """Poll ``url`` until it answers 200 (True), ``timeout`` passes or ``keep_waiting()`` says stop (False).

    For the processes that start a web server and must not go on before it serves (the demo, the load test).
    """
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and keep_waiting():
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    return False
