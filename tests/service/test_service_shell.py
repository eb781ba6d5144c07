"""The shared service shell: the file re-check loop, the /healthz answer, source-up gauges."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from cloud4iot.filewatch import watch_file
from cloud4iot.service import healthz_response
from cloud4iot.tasks import Supervisor
from extender.state.store import StateStore


async def run_for(seconds: float, coro: object) -> None:
    task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_check_that_raises_is_refused_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    heard: list[str] = []

    def check() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return "applied"

    await run_for(0.2, watch_file(0.02, check, heard.append, what="x reload", keeps="x"))
    assert heard[0] == "refused"
    assert "applied" in heard[1:]  # still re-checking after the bug
    assert "x reload failed unexpectedly; x stays" in caplog.text


async def test_unchanged_is_not_reported_and_a_prepared_value_is_applied_on_the_loop() -> None:
    results = iter(["unchanged", (42,)])
    applied: list[object] = []
    heard: list[str] = []

    def apply(value: tuple[int]) -> str:
        applied.append(value)
        return "applied"

    def check() -> str | tuple[int]:
        return next(results, "unchanged")

    await run_for(0.2, watch_file(0.02, check, heard.append, apply=apply))
    assert applied == [(42,)]
    assert heard == ["applied"]


@pytest.mark.parametrize(("immediately", "checked"), [(True, 1), (False, 0)])
async def test_immediately_checks_before_the_first_interval(
    immediately: bool, checked: int
) -> None:
    calls: list[int] = []

    def check() -> str:
        calls.append(1)
        return "unchanged"

    await run_for(0.2, watch_file(60, check, immediately=immediately))
    assert len(calls) == checked


async def test_healthz_names_the_tasks_that_ended() -> None:
    tasks = Supervisor()
    assert healthz_response(tasks).status == 200
    tasks.dead["watch-nodes"] = "returned"
    response = healthz_response(tasks)
    assert response.status == 503
    assert response.text == "background task ended: watch-nodes: returned"


def test_source_up_follows_the_source_health() -> None:
    store = StateStore()
    up = store.up("prometheus")
    assert up() == 0.0  # never reported
    store.health("prometheus").ok = True
    assert up() == 1.0
    store.health("prometheus").ok = False
    assert up() == 0.0
