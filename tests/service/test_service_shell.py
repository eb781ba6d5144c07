"""The shared service shell: the file re-check loop, the /healthz answer, source-up gauges,
the routes every process serves from its Runtime and the plain-HTTP health listener."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from cloud4iot.filewatch import watch_file
from cloud4iot.service import healthz_response, plain_listener, service_routes
from cloud4iot.tasks import Supervisor
from devcluster.processes import free_port
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


# --- the HTTP shell: service_routes and plain_listener ------------------------------------


@dataclass
class _Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)


@dataclass
class _Runtime:
    tasks: Supervisor = field(default_factory=Supervisor)
    metrics: _Metrics = field(default_factory=_Metrics)
    scrapes: int = 0


KEY = web.AppKey("runtime", _Runtime)


def shell_app(**routes: Any) -> web.Application:
    app = web.Application()
    app[KEY] = _Runtime()
    app.add_routes(service_routes(KEY, **routes))
    return app


async def test_service_routes_answer_from_the_runtime(aiohttp_client: Any) -> None:
    def scraped(rt: _Runtime) -> None:
        rt.scrapes += 1
        Gauge("shell_scrapes", "scrapes", registry=rt.metrics.registry).set(rt.scrapes)

    client = await aiohttp_client(shell_app(before_scrape=scraped))
    rt = client.app[KEY]
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 404  # none given: none routed
    assert "shell_scrapes 1.0" in await (await client.get("/metrics")).text()
    assert rt.scrapes == 1
    rt.tasks.dead["watch-x"] = "returned"
    resp = await client.get("/healthz")
    assert resp.status == 503
    assert await resp.text() == "background task ended: watch-x: returned"


async def test_service_routes_take_a_process_own_healthz_and_readyz(aiohttp_client: Any) -> None:
    async def mine(request: web.Request) -> web.Response:
        return web.Response(text=f"mine {request.path}", status=418)

    client = await aiohttp_client(shell_app(healthz=mine, readyz=mine))
    assert await (await client.get("/healthz")).text() == "mine /healthz"
    assert await (await client.get("/readyz")).text() == "mine /readyz"


async def test_plain_listener_serves_the_routes_only_with_the_same_runtime(
    aiohttp_client: Any,
) -> None:
    port = free_port()
    app = web.Application()
    app[KEY] = _Runtime()
    routes = service_routes(KEY)

    async def secret(request: web.Request) -> web.Response:
        return web.Response(text="main port only")

    app.router.add_get("/secret", secret)
    app.cleanup_ctx.append(plain_listener(KEY, routes, "127.0.0.1", port))
    client = await aiohttp_client(app)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/healthz") as resp:
            assert resp.status == 200
        client.app[KEY].tasks.dead["loop"] = "returned"  # seen through the same Runtime
        async with session.get(url + "/healthz") as resp:
            assert resp.status == 503
        async with session.get(url + "/secret") as resp:
            assert resp.status == 404
    assert (await client.get("/secret")).status == 200


async def test_plain_listener_on_a_busy_port_fails_the_start() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        app = web.Application()
        app[KEY] = _Runtime()
        app.cleanup_ctx.append(plain_listener(KEY, service_routes(KEY), "127.0.0.1", port))
        runner = web.AppRunner(app)
        with pytest.raises(OSError, match=str(port)):
            await runner.setup()
        await runner.cleanup()
