"""One Lease per process, and the elected actors of that process under it.

The extender runs the nearest writer under Lease `cloud4iot-extender`; the
rebalancer runs under a Lease of its own. All actors of one process share one
leadership term: if one crashes the term ends (the others are cancelled), the
crash is logged, and the process contends again after a backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from extender.controllers.election import LeaseElector, default_identity, run_elected

Actor = Callable[[], Coroutine[Any, Any, None]]


async def run_under_lease(
    coordination: Any,  # kubernetes.aio CoordinationV1Api
    namespace: str,
    lease: str,
    actors: Sequence[Actor],
    on_change: Callable[[bool], None] | None = None,
    identity: str | None = None,
) -> None:
    """Run every actor while this process holds the Lease; contend again after losing it."""
    elector = LeaseElector(coordination, namespace, lease, identity or default_identity())

    async def term() -> None:
        async with asyncio.TaskGroup() as group:
            for actor in actors:
                group.create_task(actor())

    await run_elected(elector, term, on_change=on_change)
