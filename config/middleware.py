"""Request guards that apply to every page and API call."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse


class RejectNulBytesMiddleware:
    """A NUL byte in a URL or query string is never legitimate, and PostgreSQL refuses it in text:
    answer 400 at the door instead of a database error deep inside a view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path or any("\x00" in key or any("\x00" in v for v in values)
                                          for key, values in request.GET.lists()):  # fmt: skip
            message = "NUL characters are not allowed in URLs"
            if request.path.startswith("/api/"):
                return JsonResponse({"error": message}, status=400)
            return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
