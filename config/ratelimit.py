"""Per-client rate limits with counters in Redis, so every web process shares them.

Fixed one-minute windows keyed by client address. When Redis cannot be reached the
limit fails open (and logs): a broken limiter must not take search down.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)
_client: Any = None


def redis_client() -> Any:
    """A redis-py client for ``VITRINE_REDIS_URL`` (the embedded Redis by default, started if needed)."""
    global _client
    if _client is None:
        import redis

        if getattr(settings, "VITRINE_EMBEDDED_REDIS", False):
            from config import embedded

            embedded.redis(settings.VITRINE_HOME).ensure_running()
        _client = redis.Redis.from_url(settings.VITRINE_REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    return _client


def client_address(request: HttpRequest) -> str:
    # Behind a proxy, set VITRINE_TRUSTED_PROXY_HEADER (e.g. HTTP_X_REAL_IP) to the header it sets.
    header = settings.VITRINE_TRUSTED_PROXY_HEADER
    if header and request.META.get(header):
        return str(request.META[header]).split(",")[0].strip()
    return str(request.META.get("REMOTE_ADDR", "unknown"))


def hit(scope: str, key: str, limit: int, window: int = 60) -> bool:
    """Count one request; False when ``limit`` per ``window`` seconds is exceeded."""
    bucket = f"vitrine:rl:{scope}:{key}:{int(time.time() // window)}"
    try:
        client = redis_client()
        pipe = client.pipeline()
        pipe.incr(bucket)
        pipe.expire(bucket, window + 5)
        count, _ = pipe.execute()
    except Exception as exc:
        logger.warning("rate limiter unavailable, allowing request: %s", exc)
        return True
    return int(count) <= limit


def rate_limited(scope: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Limit a view to ``settings.VITRINE_RATE_LIMITS[scope]`` requests per minute per client."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            limit = settings.VITRINE_RATE_LIMITS.get(scope)
            if limit and not hit(scope, client_address(request), int(limit)):
                message = f"Too many searches from your address; at most {limit} a minute. Try again shortly."
                if request.path.startswith("/api/"):
                    response: HttpResponse = JsonResponse({"error": message}, status=429)
                else:
                    response = HttpResponse(message, status=429, content_type="text/plain; charset=utf-8")
                response["Retry-After"] = "60"
                return response
            return view(request, *args, **kwargs)

        return wrapper

    return decorate
