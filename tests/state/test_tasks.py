"""The guarded-task helper both deployables use: a dead loop is logged at once and
turns /healthz unhealthy; a cancelled one is neither."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cloud4iot.tasks import Supervisor
from extender.app import create_app
from extender.runtime import RUNTIME
from extender.settings import Settings


async def test_a_task_that_dies_is_logged_with_its_traceback_and_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> None:
        raise KeyError("boom")

    sup = Supervisor()
    with caplog.at_level(logging.ERROR, logger="cloud4iot.tasks"):
        task = sup.spawn(broken(), "watch-devices")
        await asyncio.wait({task})
        await asyncio.sleep(0)  # done callbacks run on the next loop turn
    [record] = [r for r in caplog.records if "watch-devices" in r.getMessage()]
    assert "died" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError
    assert sup.dead == {"watch-devices": "KeyError: 'boom'"}
    assert not sup.healthy


async def test_a_task_that_returns_is_recorded_and_a_cancelled_one_is_not() -> None:
    async def quits() -> None:
        return None

    sup = Supervisor()
    forever = sup.spawn(asyncio.Event().wait(), "forever")  # type: ignore[arg-type]
    done = sup.spawn(quits(), "quits")
    await asyncio.wait({done})
    await asyncio.sleep(0)
    await sup.stop([forever])
    assert sup.dead == {"quits": "returned"}
    assert forever.cancelled()
    assert sup.tasks == [done]


async def test_healthz_fails_as_soon_as_a_background_task_dies(aiohttp_client, repo_root) -> None:  # type: ignore[no-untyped-def]
    app = create_app(Settings(policy_path=repo_root / "policies" / "default.yaml"), sources=[])
    client = await aiohttp_client(app)
    assert (await client.get("/healthz")).status == 200

    async def broken() -> None:
        raise RuntimeError("reflector bug")

    task = app[RUNTIME].tasks.spawn(broken(), "watch-nodes")
    await asyncio.wait({task})
    await asyncio.sleep(0)
    resp = await client.get("/healthz")
    assert resp.status == 503
    assert "watch-nodes: RuntimeError: reflector bug" in await resp.text()
