"""Compressed request bodies: refused with 415 before anything is inflated.

kube-scheduler sends plain JSON; a ~1 MiB gzip that inflates to 1 GiB must cost
neither memory nor the event loop. The app runs in this process, so this process's
RSS is the extender's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from webhook_cases import pod

from cloud4iot.policy.store import PolicyStore
from extender.app import create_app
from extender.settings import Settings
from extender.state.store import StateStore
from tests.memory import memory_growth, zero_bomb

ROOT = Path(__file__).resolve().parents[2]
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def production_client(
    aiohttp_client: ClientFactory, store: StateStore
) -> TestClient[Any, Any]:
    """The service's own body limit (64 MiB), not the small one of the other tests."""
    settings = Settings(policy_path=ROOT / "policies" / "default.yaml")
    assert settings.max_body_bytes == 64 * 1024 * 1024
    app = create_app(
        settings, policy=PolicyStore.open(settings.policy_path), state=store, sources=[]
    )
    return await aiohttp_client(app)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_bomb_is_refused_without_inflating_it(production_client, encoding):
    client = production_client
    bomb = zero_bomb(1024, encoding)  # 1 GiB of zeros
    assert len(bomb) < 1.1 * 1024 * 1024
    done = asyncio.Event()
    health: list[tuple[int, float]] = []

    async def ping() -> None:
        while True:
            start = time.perf_counter()
            resp = await client.get("/healthz")
            health.append((resp.status, time.perf_counter() - start))
            if done.is_set():
                return
            await asyncio.sleep(0.01)

    with memory_growth() as growth:
        pinger = asyncio.create_task(ping())
        start = time.perf_counter()
        resp = await client.post(
            "/filter",
            data=bomb,
            headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
        )
        elapsed = time.perf_counter() - start
        status, text = resp.status, await resp.text()
        done.set()
        await asyncio.wait_for(pinger, 5)

    assert status == 415, text[:200]
    assert f"Content-Encoding {encoding} is not accepted" in orjson.loads(text)["error"]
    assert elapsed < 2.0
    assert growth.peak_over_start < 100, f"peak RSS grew {growth.peak_over_start:.0f} MiB"
    assert growth.rss < 100, f"RSS grew {growth.rss:.0f} MiB"
    assert health, "/healthz was never answered"
    assert all(code == 200 for code, _ in health)
    assert max(t for _, t in health) < 0.5, health
    # The connection pool and the service are fine afterwards.
    ok = await client.post("/filter", data=orjson.dumps({"Pod": pod(), "NodeNames": ["gw1"]}))
    assert ok.status == 200


@pytest.mark.parametrize(
    "header", ["br", "zstd", "gzip, identity", "identity, gzip", "x-unknown", "GZIP"]
)
@pytest.mark.parametrize("path", ["/filter", "/prioritize", "/explain"])
async def test_every_content_coding_but_identity_is_415_with_a_reason(client, path, header):
    body = orjson.dumps({"Pod": pod(), "NodeNames": ["gw1"]})
    resp = await client.post(path, data=body, headers={"Content-Encoding": header})
    assert resp.status == 415
    assert "is not accepted: send the body as plain JSON" in (await resp.json())["error"]
    text = await (await client.get("/metrics")).text()
    verb = path.strip("/")
    assert (
        f'cloud4iot_extender_requests_total{{code="415",mode="invalid",verb="{verb}"}} 1.0' in text
    )


@pytest.mark.parametrize("header", ["identity", "Identity", ""])
async def test_identity_is_plain_json(client, header):
    body = orjson.dumps({"Pod": pod(), "NodeNames": ["gw1"]})
    resp = await client.post("/filter", data=body, headers={"Content-Encoding": header})
    assert resp.status == 200
