"""Request guards that apply to every page and API call."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import render

View = TypeVar("View", bound=Callable[..., Any])
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and a few small fields beside the file


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


class SecurityHeadersMiddleware:
    """``Content-Security-Policy`` and ``Permissions-Policy`` on every response, from ``VITRINE_CSP`` and
    ``VITRINE_PERMISSIONS_POLICY`` (an empty value leaves the header out). The shop's pages run only their
    own script files and style sheets, so the default policy allows no inline script or style at all.
    With DEBUG on, Django's error pages (inline styles and scripts) are left without it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if settings.DEBUG and response.status_code >= 400:
            return response
        for header, value in (("Content-Security-Policy", settings.VITRINE_CSP),
                              ("Permissions-Policy", settings.VITRINE_PERMISSIONS_POLICY)):  # fmt: skip
            if value and header not in response:
                response[header] = value
        return response


def upload_limit(setting: str) -> Callable[[View], View]:
    """Declare that a view takes one file of at most ``settings.<setting>`` bytes (read per request): a body
    longer than that and a form's overhead is refused before it is read (see :class:`UploadLimitsMiddleware`)."""

    def mark(view: View) -> View:
        view.vitrine_upload_limit = setting  # type: ignore[attr-defined]
        return view

    return mark


def _megabytes(n: int) -> str:
    return f"{n / 1_048_576:.1f} MB"


class OversizedUpload(UploadedFile):
    """A file that went past its limit while the body streamed in: its real size, none of its bytes."""

    def __init__(self, name: str, content_type: str, size: int, charset: str | None) -> None:
        super().__init__(io.BytesIO(), name, content_type, size, charset)


class FileSizeLimitHandler(FileUploadHandler):
    """First in the chain of upload handlers: counts each file's bytes and stops passing them on once the file
    is over ``limit``, so the memory and temporary-file handlers behind it never hold more than that. The file
    then arrives as an :class:`OversizedUpload`, which the image checks refuse, naming its size."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        return raw_data if self.received <= self.limit else None

    def file_complete(self, file_size: int) -> UploadedFile | None:
        if self.received <= self.limit:
            return None  # the next handler holds it
        return OversizedUpload(self.file_name or "upload", self.content_type or "", self.received, self.charset)


class UploadLimitsMiddleware:
    """Judges a request body before anything reads it (CSRF's check reads forms: this runs first).

    From ``Content-Length``, a body over the view's limit is answered 413 at once, unread: a view marked with
    :func:`upload_limit` takes its one file and a form's overhead; otherwise signed-in users may send
    ``VITRINE_MAX_REQUEST_BYTES`` (the upload page's many files) and anonymous ones a plain form's worth
    (``DATA_UPLOAD_MAX_MEMORY_SIZE``). While an accepted body streams in, no file is kept past its limit
    (:class:`FileSizeLimitHandler`)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponse | None:
        setting = getattr(view, "vitrine_upload_limit", None)
        file_limit = int(getattr(settings, setting)) if setting else settings.VITRINE_MAX_UPLOAD_BYTES
        if setting:
            body_limit = file_limit + FORM_OVERHEAD
        elif getattr(getattr(request, "user", None), "is_authenticated", False):
            body_limit = settings.VITRINE_MAX_REQUEST_BYTES
        else:
            body_limit = max(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0, FORM_OVERHEAD)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # what Django itself assumes, reading nothing
        if length > body_limit:
            return self._too_large(request, length, body_limit)
        request.upload_handlers.insert(0, FileSizeLimitHandler(request, file_limit))
        return None

    @staticmethod
    def _too_large(request: HttpRequest, length: int, limit: int) -> HttpResponse:
        message = f"The request is {_megabytes(length)}; at most {_megabytes(limit)} is accepted here."
        if request.path.startswith("/api/"):
            return JsonResponse({"error": message}, status=413)
        return render(request, "413.html", {"message": message}, status=413)
