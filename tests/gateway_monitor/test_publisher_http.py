"""The publisher through the real kubernetes client against a stand-in apiserver.

Checks the wire format of the write of our GatewayReport (content type, field manager,
body) and that the latest state survives an apiserver outage and is sent once it is back. The real
apiserver's merge semantics are covered by the cluster test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes.aio.client import CustomObjectsApi
from kubernetes.aio.config import new_client_from_config

from devcluster.processes import free_port
from gateway_monitor.publisher import PublishConfig, Publisher, PublishPlan, Sighting
from tests.waiting import eventually


@dataclass
class FakeApiserver:
    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "gone":
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        self.requests.append(
            {
                "name": name,
                "content_type": request.headers.get("Content-Type"),
                "query": dict(request.query),
                "body": json.loads(await request.text()),
                "at": asyncio.get_running_loop().time(),
            }
        )
        return web.json_response({"metadata": {"name": name}})

    async def up(self) -> None:
        app = web.Application()
        app.router.add_patch(
            "/apis/cloud4iot.io/v1alpha1/gatewayreports/{name}/status", self.handle
        )
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def down(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def apiserver() -> AsyncIterator[FakeApiserver]:
    server = FakeApiserver(free_port())
    await server.up()
    yield server
    await server.down()


@pytest.fixture
async def api(apiserver: FakeApiserver, tmp_path: Path) -> AsyncIterator[CustomObjectsApi]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "f", "cluster": {"server": f"http://127.0.0.1:{apiserver.port}"}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "f", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    client = await new_client_from_config(config_file=str(kubeconfig))
    yield CustomObjectsApi(client)
    await client.close()


async def test_report_wire_format_and_resync_after_outage(
    apiserver: FakeApiserver, api: CustomObjectsApi
) -> None:
    plan = PublishPlan(PublishConfig(min_interval=0.1, heartbeat=3600.0))
    publisher = Publisher(api, "gw1", plan, backoff=lambda _n: 0.2, wall=lambda: 30.0)
    task = asyncio.create_task(publisher.run())
    try:
        publisher.update("patient-1", Sighting(-61, 0.0))
        await eventually(lambda: len(apiserver.requests) == 1)
        req = apiserver.requests[0]
        assert req["name"] == "gw1"
        # A merge patch of the status alone (not an apply: the apiserver parses an
        # apply's body as YAML, BENCHMARKS.md "What a report write costs the apiserver").
        assert req["content_type"] == "application/merge-patch+json"
        assert req["query"] == {"fieldManager": "cloud4iot-gateway-monitor/gw1"}
        assert set(req["body"]) == {"status"}
        assert req["body"]["status"] == {
            "observedAt": "1970-01-01T00:00:30Z",
            "heard": 1,
            "sightings": [{"device": "patient-1", "rssi": -61, "lastSeen": "1970-01-01T00:00:00Z"}],
        }

        await apiserver.down()
        publisher.update("patient-1", Sighting(-80, 10.0))
        await eventually(lambda: not publisher.reachable)
        publisher.update("patient-1", Sighting(-70, 20.0))  # newer state during the outage
        await asyncio.sleep(0.5)  # several retries fail meanwhile
        assert len(apiserver.requests) == 1

        await apiserver.up()
        await eventually(lambda: len(apiserver.requests) >= 2)
        await eventually(lambda: publisher.reachable)
        assert apiserver.requests[1]["body"]["status"]["sightings"][0]["rssi"] == -70
        await asyncio.sleep(0.3)
        assert len(apiserver.requests) == 2  # in sync now: nothing more to send

        publisher.update("patient-1", None)  # departure empties our list
        await eventually(lambda: len(apiserver.requests) == 3)
        assert apiserver.requests[2]["body"]["status"]["sightings"] == []
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_missing_report_is_retried_with_nothing_forgotten(
    apiserver: FakeApiserver, api: CustomObjectsApi
) -> None:
    """404: the extender has not made our report yet (or the node is not labelled)."""
    publisher = Publisher(
        api, "gone", PublishPlan(PublishConfig(min_interval=0.1)), backoff=lambda _n: 0.1
    )
    task = asyncio.create_task(publisher.run())
    try:
        publisher.update("patient-1", Sighting(-61, 0.0))
        await eventually(lambda: publisher.plan.entries["patient-1"].failures >= 2)
        assert publisher.reachable  # refused, not away
        assert publisher.plan.entries["patient-1"].desired == Sighting(-61, 0.0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_one_write_carries_every_device_and_shutdown_empties_the_report(
    apiserver: FakeApiserver, api: CustomObjectsApi
) -> None:
    publisher = Publisher(
        api, "gw1", PublishPlan(PublishConfig(min_interval=0.1)), backoff=lambda _n: 0.1
    )
    publisher.update("patient-1", Sighting(-61, 0.0))
    publisher.update("patient-2", Sighting(-65, 0.0))
    task = asyncio.create_task(publisher.run())
    try:
        await eventually(lambda: len(apiserver.requests) == 1)
        listed = apiserver.requests[0]["body"]["status"]["sightings"]
        assert [e["device"] for e in listed] == ["patient-1", "patient-2"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await publisher.remove_all() == 2
    assert len(apiserver.requests) == 2
    assert apiserver.requests[-1]["name"] == "gw1"
    assert apiserver.requests[-1]["body"]["status"]["sightings"] == []


async def test_a_crowd_of_arrivals_is_spread_out_at_the_gateway_rate(
    apiserver: FakeApiserver, api: CustomObjectsApi
) -> None:
    """Arrivals one after another: each write waits for the gateway's rate (10/s here)
    and carries everything heard by then."""
    publisher = Publisher(
        api, "gw1", PublishPlan(PublishConfig(max_rate=10.0)), backoff=lambda _n: 0.1
    )
    task = asyncio.create_task(publisher.run())
    try:
        for i in range(6):
            publisher.update(f"patient-{i}", Sighting(-60, 0.0))
            await eventually(lambda n=i: any(
                len(r["body"]["status"]["sightings"]) == n + 1 for r in apiserver.requests
            ))  # fmt: skip
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    times = [r["at"] for r in apiserver.requests]
    assert len(times) == 6
    assert {r["name"] for r in apiserver.requests} == {"gw1"}
    # 10 applies/s: six requests span at least five gaps of 0.1 s
    assert times[-1] - times[0] >= 0.45
    assert times == sorted(times)


async def test_with_the_lease_renewed_an_advert_wakes_the_loop_only_when_something_is_sooner(
    apiserver: FakeApiserver, api: CustomObjectsApi
) -> None:
    """A live gateway's writes wait for report_interval: a step heard meanwhile makes
    nothing due sooner and must not wake the loop (once per advert, that was much of the
    monitor's CPU), yet the step is written when the interval ends, and an arrival
    while waiting for nothing still goes out at once."""
    plan = PublishPlan(PublishConfig(report_interval=1.0, min_interval=0.0))
    publisher = Publisher(api, "gw1", plan, backoff=lambda _n: 0.1, liveness=lambda: True)
    flushes = 0
    real_flush = publisher.flush

    async def counting_flush() -> None:
        nonlocal flushes
        flushes += 1
        await real_flush()

    publisher.flush = counting_flush  # type: ignore[method-assign]
    task = asyncio.create_task(publisher.run())
    try:
        publisher.update("patient-1", Sighting(-60, 0.0))
        await eventually(lambda: len(apiserver.requests) == 1)
        before, written_at = flushes, apiserver.requests[0]["at"]
        for i in range(40):  # 40 steps of >= 2 dB within the interval
            publisher.update("patient-1", Sighting(-70 + 4 * (i % 2) - 2, float(i)))
            await asyncio.sleep(0.01)
        assert flushes - before <= 3  # the loop's own wake-ups, not one per advert
        await eventually(lambda: len(apiserver.requests) == 2)
        assert apiserver.requests[1]["at"] - written_at >= 0.95  # report_interval held
        assert apiserver.requests[1]["body"]["status"]["sightings"][0]["rssi"] == -68
        # Nothing due now; the loop sleeps up to LIVENESS_CHECK. An arrival wakes it
        # as soon as report_interval allows.
        await asyncio.sleep(1.1)
        sent_before = len(apiserver.requests)
        asked = asyncio.get_running_loop().time()
        publisher.update("patient-2", Sighting(-55, 50.0))
        await eventually(lambda: len(apiserver.requests) == sent_before + 1)
        assert apiserver.requests[-1]["at"] - asked < 0.5
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
