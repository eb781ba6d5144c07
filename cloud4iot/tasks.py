"""Background tasks that cannot die silently, shared by both deployables.

A task that crashes or returns is logged at once (not when the app shuts down)
and recorded, so /healthz turns unhealthy and the kubelet restarts the process
instead of leaving a replica that answers from a state nobody refreshes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Supervisor:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    dead: dict[str, str] = field(default_factory=dict)  # task name -> why it ended

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._ended)
        self.tasks.append(task)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        name = task.get_name()
        if (exc := task.exception()) is not None:
            log.error("background task %s died", name, exc_info=exc)
            self.dead[name] = f"{type(exc).__name__}: {exc}"
        else:
            log.error("background task %s returned unexpectedly", name)
            self.dead[name] = "returned"

    @property
    def healthy(self) -> bool:
        return not self.dead

    def why_unhealthy(self) -> str | None:
        """One line naming every task that ended and why, or None while all run."""
        if not self.dead:
            return None
        ended = "; ".join(f"{name}: {reason}" for name, reason in sorted(self.dead.items()))
        return f"background task ended: {ended}"

    async def stop(self, tasks: Sequence[asyncio.Task[None]] | None = None) -> None:
        """Cancel `tasks` (default: all, newest first) and wait for them; their errors
        are already logged."""
        if tasks is None:
            tasks = self.tasks
        self.tasks = [t for t in self.tasks if t not in tasks]
        for task in reversed(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
