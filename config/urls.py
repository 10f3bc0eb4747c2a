from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import URLPattern, URLResolver, include, path, re_path
from django.views.static import serve

from config import health

admin.site.site_header = "Vitrine staff"
admin.site.site_title = "Vitrine"
admin.site.index_title = "Catalogue and search"


def favicon(request: HttpRequest) -> HttpResponseBase:
    """Browsers (and the admin's pages, which link no icon) ask for /favicon.ico: answer it, not a 404."""
    from django.contrib.staticfiles import finders
    from django.http import FileResponse, Http404

    found = finders.find("favicon.ico")
    if not found:
        raise Http404("no favicon.ico in the static files")
    response = FileResponse(open(found, "rb"), content_type="image/x-icon")  # noqa: SIM115 (FileResponse closes it)
    response["Cache-Control"] = "public, max-age=86400"
    return response


urlpatterns: list[URLPattern | URLResolver] = [
    path("favicon.ico", favicon, name="favicon"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("", include("catalog.urls")),
]
if apps.is_installed("search"):
    urlpatterns.append(path("", include("search.urls")))


def serve_media(request: HttpRequest, path: str) -> HttpResponseBase:
    # MEDIA_ROOT is read per request (not frozen at import) so it follows VITRINE_HOME overrides.
    return serve(request, path, document_root=str(settings.MEDIA_ROOT))


if settings.VITRINE_SERVE_MEDIA:
    prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns += [re_path(rf"^{prefix}(?P<path>.*)$", serve_media)]


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    """400 with a message people can act on (Django's default says only "Bad Request")."""
    from django.core.exceptions import TooManyFieldsSent, TooManyFilesSent
    from django.http import HttpResponseBadRequest, JsonResponse

    if isinstance(exception, TooManyFilesSent):
        message = f"Too many files in one request: at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES}."
    elif isinstance(exception, TooManyFieldsSent):
        message = "Too many form fields in one request."
    else:
        message = "Bad request."
    if request.path.startswith("/api/"):
        return JsonResponse({"error": message}, status=400)
    return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


handler400 = bad_request
