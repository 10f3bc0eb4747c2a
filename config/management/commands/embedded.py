"""manage.py embedded {status,stop} — the embedded PostgreSQL, Redis and Milvus under VITRINE_HOME."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from config import embedded, embedded_milvus


class Command(BaseCommand):
    help = "Show or stop the embedded PostgreSQL, Redis and Milvus servers of this VITRINE_HOME."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["status", "stop"])
        parser.add_argument("--force", action="store_true", help="Stop even while other processes use them.")

    def handle(self, *args: Any, action: str, force: bool, **options: Any) -> None:
        home = settings.VITRINE_HOME
        services: list[embedded.EmbeddedService] = []
        if settings.DATABASES["default"]["ENGINE"] == "config.embedded_postgres":
            services.append(embedded.postgres(home))
        if settings.VITRINE_EMBEDDED_REDIS:
            services.append(embedded.redis(home))
        if embedded_milvus.in_use():
            services.append(embedded_milvus.milvus(home))
        if not services:
            self.stdout.write("DATABASE_URL and CELERY_BROKER_URL are set: no embedded servers in use.")
        for service in services:
            exposed: list[int] = []
            if action == "stop":
                stopped = service.stop(force=force)
                users = service.users()
                state = "stopped" if stopped else f"still running, used by pid(s) {', '.join(map(str, users))}"
            else:
                running = service.is_running()
                users = service.users()
                state = f"running ({len(users)} process(es) using it)" if running else "not running"
                if running and isinstance(service, embedded_milvus.EmbeddedMilvus):
                    state += f" on {service.uri} (password in {service.password_path})"
                    exposed = service.exposed_ports()
            self.stdout.write(f"{service.name:9} {state}   [{home}]")
            if action != "stop" and isinstance(service, embedded_milvus.EmbeddedMilvus) and running and exposed:
                ports = ", ".join(map(str, exposed))
                self.stdout.write(f"          Milvus 2.3.5's ports listen on every interface: {ports}; "
                                  f"the client port ({service.port}) needs the password, the internal ones do not: "
                                  "firewall them on a host others can reach (docs/scaling.md)")  # fmt: skip
