"""The monitor's list-then-watch loop against stand-in answers: what it does between watches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from gateway_monitor.kubeapi import ApiError
from gateway_monitor.listwatch import list_watch


class Api:
    """Lists nothing; each watch ends at once with `events`, or raises `error`."""

    def __init__(self, events: list[dict[str, Any]] | None = None, error: int | None = None):
        self.lists = 0
        self.watches = 0
        self.events = events or []
        self.error = error

    async def list_cluster_custom_object(self, *args: Any) -> dict[str, Any]:
        self.lists += 1
        await asyncio.sleep(0)
        return {"metadata": {"resourceVersion": "1"}, "items": []}

    async def watch_cluster_custom_object(self, *args: Any, **kw: Any) -> AsyncIterator[Any]:
        self.watches += 1
        await asyncio.sleep(0)
        if self.error is not None:
            raise ApiError(self.error, "Gone", "")
        for event in self.events:
            await asyncio.sleep(0)  # (a real watch awaits its stream)
            yield event


async def run_for(api: Api, seconds: float, backoff: float = 0.1) -> list[str]:
    seen: list[str] = []
    task = asyncio.create_task(
        list_watch(
            api,
            "devices",
            what="Devices",
            on_list=lambda items: seen.append("list"),
            on_event=lambda kind, obj: seen.append(kind),
            backoff=lambda n: backoff,
        )
    )
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return seen


async def test_a_watch_that_ends_at_once_and_empty_is_backed_off() -> None:
    api = Api()
    await run_for(api, 0.5)
    assert api.lists == 1
    assert 3 <= api.watches <= 7  # one per backoff (0.1 s), not thousands a second


async def test_a_watch_that_delivers_is_renewed_at_once() -> None:
    event = {"type": "ADDED", "object": {"metadata": {"resourceVersion": "2"}}}
    api = Api(events=[event])
    seen = await run_for(api, 0.2)
    assert api.watches > 50  # (the stand-in's watches all end at once, but not empty)
    assert seen.count("ADDED") == api.watches or seen.count("ADDED") == api.watches - 1


async def test_a_relist_on_410_is_at_once_the_first_time_then_backed_off() -> None:
    api = Api(error=410)
    await run_for(api, 0.5)
    assert 4 <= api.lists <= 8  # the first relist at once, the next ones 0.1 s apart
