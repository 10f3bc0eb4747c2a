"""What every search needs to know first, cached per process: the active version of each space, whether each
space is available, and the hybrid ranking's tuned weights.

Looking these up costs a round trip per request for rows that change a few times a year, so each process keeps
them for ``VITRINE_ACTIVE_CACHE_S`` seconds (5). Staying correct when they change:

* in the process that changes them (a version registered or activated, weights tuned), :func:`active_forget`
  runs when the transaction commits, so the next search reloads;
* another process (a worker activating a new version) reaches every web process within the TTL, and sooner where
  it matters: the worker drops the retired version's vectors right after the switch, so a search that still reads
  it finds nothing; :func:`active_changed` then reloads and says whether the version moved on, and the search
  retries with the new one. Until the drop, a stale process serves the old version, which is still complete.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings
from django.db.models import OuterRef, Subquery

from search.models import RankingWeights, SpaceState, SpaceVersion


@dataclass(frozen=True)
class ActiveState:
    versions: Mapping[str, SpaceVersion]  # the active version of each space that has one
    available: Mapping[str, bool]  # what the last process to load each space found (absent: never tried)
    weights: tuple[RankingWeights, ...]  # tuned hybrid weights, newest first
    loaded_at: float  # time.monotonic()


_state: ActiveState | None = None


def _load() -> ActiveState:
    global _state
    availability = SpaceState.objects.filter(key=OuterRef("space")).values("available")[:1]
    rows = SpaceVersion.objects.filter(state=SpaceVersion.State.ACTIVE).annotate(space_available=Subquery(availability))
    versions = {row.space: row for row in rows}
    available = {space: bool(row.space_available) for space, row in versions.items() if row.space_available is not None}  # type: ignore[attr-defined]
    weights = tuple(RankingWeights.objects.order_by("-tuned_at", "-pk")[:50])
    state = ActiveState(versions=versions, available=available, weights=weights, loaded_at=time.monotonic())
    _state = state  # one reference swapped whole: threads see the old state or the new, never half of each
    return state


def active_state() -> ActiveState:
    """The cached state, reloaded (two queries) when older than ``VITRINE_ACTIVE_CACHE_S`` or forgotten."""
    state = _state
    if state is None or time.monotonic() - state.loaded_at >= float(settings.VITRINE_ACTIVE_CACHE_S):
        state = _load()
    return state


def active_forget() -> None:
    """Make this process reload on its next search (after it changed versions or weights, and in tests)."""
    global _state
    _state = None


def active_changed(*versions: SpaceVersion | None) -> bool:
    """Reload now, and say whether any of these versions is no longer its space's active one.

    For a search that found nothing where it expected something: it may have read a version another process has
    just retired and dropped.
    """
    state = _load()
    # Only versions that were active when read (a building version under evaluation is not meant to move on).
    read_as_active = [v for v in versions if v is not None and v.state == SpaceVersion.State.ACTIVE]
    return any(getattr(state.versions.get(v.space), "pk", None) != v.pk for v in read_as_active)
