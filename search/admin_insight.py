"""The staff dashboard of search insight: top queries, queries with no or weak results (with the products nearest
to their words), click-through, and the trend of the last 30 days as SVG drawn on the server; and the switch that
turns recording on or off."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from search.assistants import insight
from search.models import SearchEvent

NEAREST_FOR = 5  # weak queries shown with their nearest products (each embeds the query once)


@admin.register(SearchEvent)
class SearchEventAdmin(admin.ModelAdmin):
    """Its list page is the dashboard; single searches are not worth a page each."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [path("recording/", view(self.recording_view), name="search_searchevent_recording"),
                *super().get_urls()]  # fmt: skip

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        figures = insight.dashboard(days=30)
        for row in figures["weak_queries"][:NEAREST_FOR]:
            row["nearest"] = insight.nearest_products(query=row["query"])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Search insight",
            "figures": figures,
            "trend_svg": insight.trend_svg(figures["trend"]),
            "recording": insight.recording(),
            "retention_days": settings.VITRINE_INSIGHT_RETENTION_DAYS,
            "weak_score": settings.VITRINE_INSIGHT_WEAK_SCORE,
            "can_switch": request.user.has_perm("search.change_insightswitch"),
        }
        return TemplateResponse(request, "admin/search/insight_dashboard.html", context)

    def recording_view(self, request: HttpRequest) -> HttpResponse:
        url = reverse("admin:search_searchevent_changelist")
        if request.method != "POST" or not request.user.has_perm("search.change_insightswitch"):
            return HttpResponseRedirect(url)
        on = request.POST.get("recording") == "1"
        insight.recording_set(on=on, user=request.user)
        self.message_user(request, "Searches are recorded." if on else "Searches are no longer recorded.",
                          messages.SUCCESS)  # fmt: skip
        return HttpResponseRedirect(url)
