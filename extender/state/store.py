"""The extender's current Snapshot plus the health of the sources that feed it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from extender.state.snapshot import Snapshot


@dataclass(slots=True)
class SourceHealth:
    ok: bool = False
    detail: str = "not started"
    last_success: float | None = None


@dataclass(slots=True)
class StateStore:
    """Holds the latest Snapshot; sources replace it whole, readers never lock.

    Rebinding one attribute is atomic in CPython and every Snapshot is frozen, so a
    request sees either the old picture or the new one, never a mix.
    """

    snapshot: Snapshot = field(default_factory=Snapshot)
    sources: dict[str, SourceHealth] = field(default_factory=dict)

    def health(self, name: str) -> SourceHealth:
        return self.sources.setdefault(name, SourceHealth())

    def up(self, name: str) -> Callable[[], float]:
        """1.0 while source `name` is healthy, else 0.0: a gauge's function."""
        return lambda: 1.0 if name in self.sources and self.sources[name].ok else 0.0
