"""The whole function (``app.serve``) when one of its tasks crashes: the cleanup still runs."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from omh_consolidator import app
from omh_consolidator.config import from_env
from omh_consolidator.reader import HeartRateReader


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held together while chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


async def test_a_crashed_reader_still_queues_the_open_window_drains_and_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve's cleanup cancelled-and-awaited the crashed reader, which raised its error again
    in the middle of the cleanup: the open window was lost, nothing was drained, the queue
    log was not closed and /metrics, /healthz kept answering 200."""
    stored: list[dict[str, Any]] = []

    async def ingest(request: web.Request) -> web.Response:
        stored.append(await request.json())
        return web.Response(status=200)

    async def crashing(self: HeartRateReader) -> None:
        self._on_notification(b"\x00\x48")  # 72 bpm, in the open window
        raise RuntimeError("reader bug")

    monkeypatch.setattr(HeartRateReader, "run", crashing)
    server = web.Application()
    server.router.add_post("/v1/batches", ingest)
    (port,) = _free_ports(1)
    async with TestServer(server) as cloud:
        cfg = from_env(
            {
                "DEVICE_ADDRESS": "C0:FF:EE:00:00:42",
                "INGEST_URL": str(cloud.make_url("/v1/batches")),
                "QUEUE_DIR": str(tmp_path),
                "METRICS_PORT": str(port),
                "HANDOVER_PORT": "0",
                "DRAIN_SECONDS": "5",
            }
        )
        with pytest.raises(RuntimeError, match="reader bug"):
            await app.serve(cfg, asyncio.Event())
    assert [b["kind"] for b in stored] == ["summary"]  # the open window, sent
    assert stored[0]["window"]["count"] == 1
    assert os.listdir(tmp_path) == []  # the log closed, nothing left to adopt
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/healthz")


async def test_healthz_answers_only_once_the_handover_endpoint_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/healthz (the readiness probe) came up before the handover site: a rollout could take
    the new pod for ready and stop the old one, whose handover then found nobody listening."""
    started = asyncio.Event()

    async def quiet(self: HeartRateReader) -> None:
        started.set()
        await asyncio.Event().wait()

    real_start_site = app.start_site

    async def slow_handover(site: web.Application, port: int) -> web.AppRunner:
        if port == handover:
            await asyncio.sleep(0.5)  # binding the handover port takes a while
        return await real_start_site(site, port)

    monkeypatch.setattr(HeartRateReader, "run", quiet)
    monkeypatch.setattr(app, "start_site", slow_handover)
    metrics, handover = _free_ports(2)
    cfg = from_env(
        {
            "DEVICE_ADDRESS": "C0:FF:EE:00:00:42",
            "INGEST_URL": "http://127.0.0.1:9/v1/batches",
            "QUEUE_DIR": str(tmp_path),
            "METRICS_PORT": str(metrics),
            "HANDOVER_PORT": str(handover),
            "DRAIN_SECONDS": "0",
        }
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(cfg, stop))
    try:
        async with aiohttp.ClientSession() as session:
            while not started.is_set():
                try:
                    async with session.get(f"http://127.0.0.1:{metrics}/healthz") as r:
                        assert r.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.01)
            # ready: the handover endpoint must take a connection now
            _, writer = await asyncio.open_connection("127.0.0.1", handover)
            writer.close()
    finally:
        stop.set()
        await serving
