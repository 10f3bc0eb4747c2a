from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import URLPattern, URLResolver, include, path, re_path
from django.views.static import serve

admin.site.site_header = "Vitrine staff"
admin.site.site_title = "Vitrine"
admin.site.index_title = "Catalogue and search"

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    path("", include("catalog.urls")),
    path("", include("search.urls")),
]


def serve_media(request: HttpRequest, path: str) -> HttpResponseBase:
    # MEDIA_ROOT is read per request (not frozen at import) so it follows VITRINE_HOME overrides.
    return serve(request, path, document_root=str(settings.MEDIA_ROOT))


if settings.VITRINE_SERVE_MEDIA:
    prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns += [re_path(rf"^{prefix}(?P<path>.*)$", serve_media)]
