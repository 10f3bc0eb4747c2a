"""The one error every embedding layer shares (the registry, the embedders, the runtimes)."""

from __future__ import annotations


class SpaceUnavailable(Exception):
    """The space cannot be used here (weights missing, hub unreachable…). ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
