"""Staff pages for the embedding spaces: availability, counts, versions, reindex buttons and job progress; the
hybrid ranking's tuned weights."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from catalog.models import Product
from search.indexing import jobs, sweep, versions
from search.models import RankingWeights, ReindexJob, SpaceState, SpaceVersion


def _ensure_states() -> None:
    """Every configured space appears, even before a worker has tried to load it."""
    for key in settings.VITRINE_SPACES:
        SpaceState.objects.get_or_create(key=key, defaults={"reason": "not checked yet: no worker has loaded it"})


@admin.register(SpaceState)
class SpaceStateAdmin(admin.ModelAdmin):
    list_display = ["key", "enabled", "status", "active_version", "counts", "checked_at"]
    list_display_links = ["key"]
    ordering = ["key"]
    actions = ["sweep_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[SpaceState]:
        _ensure_states()
        return super().get_queryset(request).filter(key__in=list(settings.VITRINE_SPACES))

    @admin.display(boolean=True)
    def enabled(self, obj: SpaceState) -> bool:
        return obj.key in settings.VITRINE_ENABLED_SPACES

    @admin.display(description="status")
    def status(self, obj: SpaceState) -> str:
        if obj.available:
            return mark_safe('<span class="vt-available">available</span>')
        return format_html('<span class="vt-unavailable">unavailable</span>: {}', obj.reason)

    @admin.display(description="active version")
    def active_version(self, obj: SpaceState) -> str:
        version = versions.active_version(obj.key)
        return f"{version.version} ({version.dimension}-d)" if version else "—"

    @admin.display(description="present / missing / stale / failed")
    def counts(self, obj: SpaceState) -> str:
        c = versions.space_counts(obj.key)
        return f"{c.present} / {c.missing} / {c.stale} / {c.failed}  (of {c.total})"

    @admin.action(description="Sweep: queue images whose vectors are missing or stale", permissions=["change"])
    def sweep_now(self, request: HttpRequest, queryset: QuerySet[SpaceState]) -> None:
        keys = [key for key in queryset.values_list("key", flat=True) if key in settings.VITRINE_ENABLED_SPACES]
        queued = sweep.sweep(spaces=keys)
        summary = ", ".join(f"{key}: {n}" for key, n in queued.items()) or "nothing enabled selected"
        self.message_user(request, f"Queued for embedding: {summary}.", messages.SUCCESS)

    def get_urls(self) -> list[Any]:
        custom = [
            path("<int:pk>/reindex/", self.admin_site.admin_view(self.reindex_view), name="search_spacestate_reindex"),
        ]
        return custom + super().get_urls()

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:  # fmt: skip
        state = self.get_object(request, unquote(object_id))  # None for an id that is not one, not a 500
        if state is None:
            raise Http404(f"No embedding space with id {object_id[:40]!r}")
        if not self.has_view_or_change_permission(request, state):
            raise PermissionDenied
        jobs = list(ReindexJob.objects.filter(space=state.key)[:10])
        running = any(job.status in (ReindexJob.Status.QUEUED, ReindexJob.Status.RUNNING) for job in jobs)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Embedding space: {state.key}",
            "state": state,
            "enabled": state.key in settings.VITRINE_ENABLED_SPACES,
            "counts": versions.space_counts(state.key),
            "versions": SpaceVersion.objects.filter(space=state.key).exclude(state=SpaceVersion.State.RETIRED),
            "jobs": jobs,
            "refresh": running,
            "can_reindex": self.has_change_permission(request, state),
        }
        return TemplateResponse(request, "admin/search/space_detail.html", context)

    def reindex_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        state = get_object_or_404(SpaceState, pk=pk)
        url = reverse("admin:search_spacestate_change", args=[pk])
        if request.method != "POST" or not self.has_change_permission(request, state):
            return HttpResponseRedirect(url)
        if state.key not in settings.VITRINE_ENABLED_SPACES:
            self.message_user(request, f"The {state.key} space is not enabled.", messages.ERROR)
            return HttpResponseRedirect(url)
        missing_only = request.POST.get("missing_only") == "1"
        job = jobs.reindex_job_create(space=state.key, missing_only=missing_only, requested_by=request.user)
        what = "missing and stale images" if missing_only else "every image"
        self.message_user(request, f"Reindex job #{job.pk} queued for {what} in {state.key}.", messages.SUCCESS)
        return HttpResponseRedirect(url)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the system writes (jobs, measurements): staff look, never add or edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ReindexJob)
class ReindexJobAdmin(ReadOnlyAdmin):
    list_display = ["id", "space", "scope", "status", "progress_bar", "failed", "created_at", "finished_at"]
    list_filter = ["space", "status"]
    readonly_fields = [f.name for f in ReindexJob._meta.fields]

    @admin.display(description="scope")
    def scope(self, obj: ReindexJob) -> str:
        if obj.product_ids is not None:
            return f"{len(obj.product_ids)} product(s)"
        return "missing only" if obj.missing_only else "all"

    @admin.display(description="progress")
    def progress_bar(self, obj: ReindexJob) -> str:
        return format_html(
            '<progress max="100" value="{}" class="vt-progress"></progress> {}', obj.percent, obj.progress
        )


@admin.register(RankingWeights)
class RankingWeightsAdmin(ReadOnlyAdmin):
    """What ``evaluate --tune hybrid`` chose, when, and what it measured; the newest row for the spaces in use
    is what "Looks similar" uses. Read-only: weights come from measurement, not from a form."""

    list_display = ["tuned_at", "ranking", "weights", "measured", "best_single", "queries", "folds"]
    readonly_fields = [f.name for f in RankingWeights._meta.fields]

    @admin.display(description="weights")
    def weights(self, obj: RankingWeights) -> str:
        return f"{obj.image_space} {obj.image_weight:.2f} + {obj.text_space} {obj.text_weight:.2f}"

    @admin.display(description="precision (cross-validated)")
    def measured(self, obj: RankingWeights) -> str:
        return f"p@{obj.k} {obj.precision:.3f}"

    @admin.display(description="best single space")
    def best_single(self, obj: RankingWeights) -> str:
        return f"{obj.best_single_space} p@{obj.k} {obj.best_single_precision:.3f}"


@admin.action(description="Reindex selected products in every embedding space", permissions=["change"])
def reindex(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Product]) -> None:
    queued = jobs.products_reindex(product_ids=list(queryset.values_list("pk", flat=True)), requested_by=request.user)
    modeladmin.message_user(request, f"Queued {len(queued)} reindex job(s) for {queryset.count()} product(s); "
                            "see Visual search › Reindex jobs for progress.", messages.SUCCESS)  # fmt: skip


# The catalogue's product admin knows nothing of vectors: search adds its action to it.
_product_admin = admin.site.get_model_admin(Product)
_product_admin.actions = [*(_product_admin.actions or []), reindex]  # the action's name stays "reindex"
