"""The whole function: fake strap on D-Bus -> bleak -> consolidation -> HTTP ingest."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port
from fake_strap import FakeStrap
from omh_consolidator.app import serve
from omh_consolidator.config import from_env
from omh_consolidator.handover import Receiver, handover_app
from omh_consolidator.hrm import encode_heart_rate_measurement
from omh_consolidator.metrics import Metrics
from omh_consolidator.queue import BatchQueue
from omh_schema import assert_valid_heart_rate_point

from tests.waiting import eventually

pytestmark = pytest.mark.dbus


async def test_readings_become_summaries_and_alerts_at_the_ingest(strap: FakeStrap) -> None:
    received: list[dict[str, Any]] = []

    async def ingest(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/batches", ingest)
    server = TestServer(app)
    await server.start_server()
    port = unused_port()
    cfg = from_env(
        {
            "DEVICE_NAME": "patient-42-hr",
            "DEVICE_ADDRESS": strap.address,
            "USER_ID": "patient-42",
            "NODE_NAME": "gw-home",
            "INGEST_URL": str(server.make_url("/v1/batches")),
            "WINDOW_SECONDS": "1",
            "HR_HIGH_BPM": "150",
            "SCAN_TIMEOUT_SECONDS": "1",
            "METRICS_PORT": str(port),
            "DRAIN_SECONDS": "5",
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(cfg, stop))
    try:
        await eventually(lambda: strap.characteristic.notifying)
        bpms = [70, 72, 171, 75, 74, 73, 72, 71, 70, 69]
        for bpm in bpms:
            assert strap.notify(encode_heart_rate_measurement(bpm, contact=True))
            await asyncio.sleep(0.2)
        await eventually(lambda: any(b["kind"] == "alert" for b in received))
        await eventually(lambda: any(b["kind"] == "summary" for b in received))
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text()
        assert "omh_consolidator_notifications_total 10\n" in text
        assert "omh_consolidator_notification_bytes_total 20\n" in text
        assert "omh_consolidator_ble_subscribed 1\n" in text
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await server.close()

    # shutdown unsubscribed and disconnected
    assert strap.characteristic.stop_notify_calls == 1
    assert not strap.connected
    # every reading is in exactly one window, the open one sent at shutdown included
    summaries = [b for b in received if b["kind"] == "summary"]
    assert sum(b["window"]["count"] for b in summaries) == len(bpms)
    maxima = [
        p["body"]["heart_rate"]["value"]
        for b in summaries
        for p in b["data_points"]
        if p["body"]["descriptive_statistic"] == "maximum"
    ]
    assert max(maxima) == 171
    (alert,) = [b for b in received if b["kind"] == "alert"]
    assert alert["alert"] == {"side": "high", "threshold_bpm": 150}
    assert [b["sequence"] for b in received] == list(range(1, len(received) + 1))
    for batch in received:
        for point in batch["data_points"]:
            assert_valid_heart_rate_point(point)
            assert point["header"]["user_id"] == "patient-42"
            assert point["header"]["acquisition_provenance"]["source_name"] == (
                "cloud4iot-omh-consolidator/patient-42-hr@gw-home"
            )


async def test_a_move_during_a_cloud_outage_hands_every_batch_to_the_new_pod(
    strap: FakeStrap, tmp_path: Path
) -> None:
    """The whole function with its queue on disk: SIGTERM while the cloud is down stops
    the reader, queues the open window and hands everything to the peer (here a running
    receiver with its own queue), which then holds every batch, in order, ids kept."""
    down = web.Application()
    down.router.add_post("/v1/batches", unavailable)
    cloud = TestServer(down)
    await cloud.start_server()
    peer_metrics = Metrics()
    peer_queue = BatchQueue.open(tmp_path / "gw-b", "peer0000", peer_metrics)
    receiver = Receiver(peer_queue, peer_metrics, "peer0000")
    peer = TestServer(handover_app(receiver, 1 << 20))
    await peer.start_server()
    cfg = from_env(
        {
            "DEVICE_NAME": "patient-42-hr",
            "DEVICE_ADDRESS": strap.address,
            "INGEST_URL": str(cloud.make_url("/v1/batches")),
            "WINDOW_SECONDS": "1",
            "SCAN_TIMEOUT_SECONDS": "1",
            "METRICS_PORT": "0",
            "HANDOVER_PORT": str(unused_port()),
            "HANDOVER_PEERS": f"127.0.0.1:{peer.port}",
            "QUEUE_DIR": str(tmp_path / "gw-a"),
            "DRAIN_SECONDS": "5",
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(cfg, stop))
    try:
        await eventually(lambda: strap.characteristic.notifying)
        for bpm in [70, 72, 171, 75, 74, 73]:
            assert strap.notify(encode_heart_rate_measurement(bpm, contact=True))
            await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await cloud.close()
        await peer.close()
    handed = peer_queue.waiting(100, 1 << 20)
    docs = [json.loads(b.body) for b in handed]
    assert [d["sequence"] for d in docs] == list(range(1, len(docs) + 1))  # all, in order
    assert [b.batch_id for b in handed] == [d["batch_id"] for d in docs]
    assert sum(d["window"]["count"] for d in docs if d["kind"] == "summary") == 6  # open one too
    assert [d["kind"] for d in docs].count("alert") == 1
    assert peer_metrics.get("handover_batches_received_total") == len(docs)
    assert not list((tmp_path / "gw-a").iterdir())  # nothing left behind on the old gateway
    peer_queue.close()


async def unavailable(_: web.Request) -> web.Response:
    return web.Response(status=503)
