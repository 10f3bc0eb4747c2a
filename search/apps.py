from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _configure_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "postgresql":
        from search.vectorstores.pgvector import configure_session

        with connection.cursor() as cursor:
            configure_session(cursor)


class SearchConfig(AppConfig):
    name = "search"
    verbose_name = "Visual search"

    def ready(self) -> None:
        connection_created.connect(_configure_connection, dispatch_uid="vitrine-pgvector-session")
