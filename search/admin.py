"""Staff pages for the embedding spaces: availability, counts, versions, reindex buttons and job progress; the
hybrid ranking's tuned weights; and, on the catalogue's product pages, each image's state in every space with a
"re-embed" button."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from catalog import hooks
from catalog.models import Product, ProductImage
from search.admin_assistants import PossibleDuplicateAdmin, suggestion_column  # noqa: F401 (registers it)
from search.admin_insight import SearchEventAdmin  # noqa: F401 (registers it)
from search.assistants import duplicates
from search.indexing import enqueue, jobs, sweep, versions
from search.models import RankingWeights, ReindexJob, SpaceState, SpaceVersion

REASON_SHOWN = 90  # characters of an unavailable space's reason in the list; the space's page has all of it


def _ensure_states() -> None:
    """Every configured space appears, even before a worker has tried to load it."""
    for key in settings.VITRINE_SPACES:
        SpaceState.objects.get_or_create(key=key, defaults={"reason": "not checked yet: no worker has loaded it"})


def _unavailable(state: SpaceState) -> bool:
    """A process tried to load the model and could not (never tried: not known to be unavailable)."""
    return bool(state.checked_at and not state.available)


@admin.register(SpaceState)
class SpaceStateAdmin(admin.ModelAdmin):
    list_display = ["key", "enabled", "status", "runs_on", "active_version", "counts", "duplicates", "checked"]
    list_display_links = ["key"]
    ordering = ["key"]
    actions = ["sweep_now"]

    class Media:
        css = {"all": ["css/admin.css"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[SpaceState]:
        _ensure_states()
        return duplicates.annotate_counts(super().get_queryset(request).filter(key__in=list(settings.VITRINE_SPACES)))

    @admin.display(boolean=True)
    def enabled(self, obj: SpaceState) -> bool:
        return obj.key in settings.VITRINE_ENABLED_SPACES

    @admin.display(description="status")
    def status(self, obj: SpaceState) -> str:
        if obj.available:
            return mark_safe('<span class="vitrine-ok">available</span>')
        if not obj.checked_at:
            return mark_safe('<span class="vitrine-muted">not checked yet</span>')
        short = obj.reason if len(obj.reason) <= REASON_SHOWN else obj.reason[: REASON_SHOWN - 1] + "…"
        return format_html('<span class="vitrine-bad">model unavailable</span><br><span class="vitrine-reason" '
                           'title="{}">{}</span>', obj.reason, short)  # fmt: skip

    @admin.display(description="runs on")
    def runs_on(self, obj: SpaceState) -> str:
        if not obj.runtime:
            return "—"
        if obj.needs_torch:
            return format_html('<span class="vitrine-wait" title="{}">PyTorch</span>', obj.runtime)
        return obj.runtime

    @admin.display(description="active version")
    def active_version(self, obj: SpaceState) -> str:
        version = versions.active_version(obj.key)
        if version is None:
            return "—"
        return format_html('<span class="vitrine-version">{}</span> ({}-d)', version.version, version.dimension)

    @admin.display(description="present / missing / stale / failed")
    def counts(self, obj: SpaceState) -> str:
        c = versions.space_counts(obj.key)
        return f"{c.present} / {c.missing} / {c.stale} / {c.failed} of {c.total}"

    @admin.display(description="possible duplicates")
    def duplicates(self, obj: SpaceState) -> str:
        if obj.key not in settings.VITRINE_DUPLICATE_THRESHOLDS:
            return "—"
        url = reverse("admin:search_possibleduplicate_changelist") + f"?space={obj.key}"
        return format_html('<a href="{}">{} to review</a> / {} reviewed', url, getattr(obj, "duplicates_open", 0),
                           getattr(obj, "duplicates_reviewed", 0))  # fmt: skip

    @admin.display(description="checked", ordering="checked_at")
    def checked(self, obj: SpaceState) -> str:
        return naturaltime(obj.checked_at) if obj.checked_at else "never"

    @admin.action(description="Sweep: queue images whose vectors are missing or stale", permissions=["change"])
    def sweep_now(self, request: HttpRequest, queryset: QuerySet[SpaceState]) -> None:
        chosen = list(queryset)
        keys = [s.key for s in chosen if s.key in settings.VITRINE_ENABLED_SPACES and not _unavailable(s)]
        queued = sweep.sweep(spaces=keys) if keys else {}
        summary = ", ".join(f"{key}: {n}" for key, n in queued.items()) or "nothing enabled and available selected"
        self.message_user(request, f"Queued for embedding: {summary}.", messages.SUCCESS)
        skipped = [s.key for s in chosen if _unavailable(s) and s.key in settings.VITRINE_ENABLED_SPACES]
        if skipped:
            self.message_user(request, f"Not swept, their model is unavailable: {', '.join(skipped)}.",
                              messages.WARNING)  # fmt: skip

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        custom = [
            path("<int:pk>/reindex/", view(self.reindex_view), name="search_spacestate_reindex"),
            path("images/<int:image_id>/reembed/", view(self.image_reembed_view), name="search_image_reembed"),
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
        enabled = state.key in settings.VITRINE_ENABLED_SPACES
        why_not = ("The space is not enabled (VITRINE_ENABLED_SPACES)." if not enabled else
                   f"Its model is unavailable: {state.reason}" if _unavailable(state) else "")  # fmt: skip
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Embedding space: {state.key}",
            "state": state,
            "enabled": enabled,
            "unavailable": _unavailable(state),
            "counts": versions.space_counts(state.key),
            "versions": SpaceVersion.objects.filter(space=state.key).exclude(state=SpaceVersion.State.RETIRED),
            "jobs": jobs,
            "refresh": running,
            "can_reindex": self.has_change_permission(request, state),
            "why_not": why_not,
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
        if _unavailable(state):
            self.message_user(request, f"The {state.key} space cannot be reindexed: its model is unavailable "
                              f"({state.reason}).", messages.ERROR)  # fmt: skip
            return HttpResponseRedirect(url)
        missing_only = request.POST.get("missing_only") == "1"
        job = jobs.reindex_job_create(space=state.key, missing_only=missing_only, requested_by=request.user)
        what = "missing and stale images" if missing_only else "every image"
        self.message_user(request, f"Reindex job #{job.pk} queued for {what} in {state.key}.", messages.SUCCESS)
        return HttpResponseRedirect(url)

    def image_reembed_view(self, request: HttpRequest, image_id: int) -> HttpResponse:
        """The "re-embed" button of an image on its product's admin page (it posts the product's form here)."""
        image = get_object_or_404(ProductImage.objects.select_related("product"), pk=image_id)
        url = reverse("admin:catalog_product_change", args=[image.product_id])
        product_admin = self.admin_site.get_model_admin(Product)
        if request.method != "POST" or not product_admin.has_change_permission(request, image.product):
            return HttpResponseRedirect(url)
        outcome = enqueue.image_reembed(image_id=image.pk)
        queued = [space for space, state in outcome.items() if state == "queued"]
        self.message_user(request, f"Image #{image.pk} queued for embedding again in {', '.join(queued) or 'no space'}"
                          " (unsaved changes on the page were not kept).", messages.SUCCESS)  # fmt: skip
        for space, state in outcome.items():
            if state != "queued":
                self.message_user(request, f"Not in {space}: {state}.", messages.WARNING)
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


STATE_CLASSES = {"ok": "vitrine-ok", "pending": "vitrine-wait", "stale": "vitrine-wait", "failed": "vitrine-bad",
                 "unavailable": "vitrine-muted"}  # fmt: skip


@admin.display(description="search")
def embedding_states(image: ProductImage) -> str:
    """Each enabled image space: ok / pending / stale / failed (why) / model unavailable, and a re-embed button."""
    if not image.pk:
        return ""
    rows = format_html_join("", '<li><span class="{}">{}: {}</span>{}</li>', (
        (STATE_CLASSES[s.state], s.space, "model unavailable" if s.state == "unavailable" else s.state,
         format_html('<span class="reason">{}</span>', s.detail) if s.detail else "")
        for s in versions.image_embedding_states(image=image)))  # fmt: skip
    url = reverse("admin:search_image_reembed", args=[image.pk])
    # The inline sits inside the product's form: the button posts that form to the re-embed view instead.
    button = format_html('<button type="submit" class="button vitrine-reembed" formaction="{}" formnovalidate '
                         'name="reembed" value="{}">Re-embed</button>', url, image.pk)  # fmt: skip
    # Beside the primary picture, the product's suggested category and colour when it has none (one column: the
    # table has to fit the page).
    return format_html('<ul class="vitrine-states">{}</ul>{}{}', rows, button, suggestion_column(image))


# The catalogue's product admin knows nothing of vectors: search adds its action and its image column.
_product_admin = admin.site.get_model_admin(Product)
_product_admin.actions = [*(_product_admin.actions or []), reindex]  # the action's name stays "reindex"
hooks.image_admin_column_register(name="search", column=embedding_states)
