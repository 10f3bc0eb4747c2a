"""The search app plugs itself into the catalogue here: it subscribes to ``catalog.signals``, adds its panel to
product pages (``catalog.hooks``), and configures every new Postgres connection for pgvector."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _probe_spaces_when_worker_ready(sender: Any = None, **_: Any) -> None:
    """Load every enabled space in a pool process, so the admin learns which are available and the first
    upload does not wait for a model to load."""
    from search.indexing import enqueue

    enqueue.send(enqueue.SPACES_PROBE)


def _configure_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "postgresql":
        from search.vectorstores.sql import configure_session

        with connection.cursor() as cursor:
            configure_session(cursor)


class SearchConfig(AppConfig):
    name = "search"
    verbose_name = "Visual search"

    def ready(self) -> None:
        from celery.signals import worker_ready

        from catalog import hooks, signals
        from search.assistants import duplicates, suggest
        from search.indexing import enqueue
        from search.panels import similar_products_panel

        connection_created.connect(_configure_connection, dispatch_uid="vitrine-pgvector-session")
        signals.image_added.connect(enqueue.on_image_added, dispatch_uid="search-image-added")
        signals.product_text_changed.connect(enqueue.on_product_text_changed, dispatch_uid="search-product-text")
        signals.products_changed.connect(enqueue.on_products_changed, dispatch_uid="search-products-changed")
        signals.category_changed.connect(enqueue.on_category_changed, dispatch_uid="search-category-changed")
        worker_ready.connect(_probe_spaces_when_worker_ready, dispatch_uid="search-probe-spaces")
        hooks.product_panel_register(name="similar", panel=similar_products_panel)
        hooks.upload_assistant_register(name="lookalikes", assistant=duplicates.lookalike_notes)
        hooks.upload_assistant_register(name="suggestions", assistant=suggest.suggestion_notes)
