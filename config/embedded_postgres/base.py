"""Django's PostgreSQL backend, pointed at the embedded server under VITRINE_HOME.

The server is started on the first connection a process makes, not when
settings load, so commands that never touch the database never start it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db.backends.postgresql import base

from config import embedded


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        server = embedded.postgres(Path(self.settings_dict["VITRINE_HOME"]))
        server.ensure_running()
        params["host"] = str(server.socket_dir)
        params["port"] = server.port
        return params
