"""Before its caches have listed, the extender answers a classed pod's filter with an
error (kube-scheduler retries it with backoff), not with refusals (which would park the
pod until some cluster event)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from conftest import ROOT, ClientFactory
from webhook_cases import pod, snapshot

from cloud4iot.policy.store import PolicyStore
from extender.app import create_app
from extender.settings import Settings
from extender.state.store import StateStore
from extender.webhook import NOT_SYNCED


async def cluster_client(aiohttp_client: ClientFactory, store: StateStore) -> TestClient[Any, Any]:
    # A kubeconfig configured, no sources started: the store is what the test says.
    settings = Settings(
        policy_path=ROOT / "policies" / "default.yaml", kubeconfig=Path("/nonexistent")
    )
    app = create_app(
        settings, policy=PolicyStore.open(settings.policy_path), state=store, sources=[]
    )
    return await aiohttp_client(app)


async def filter_answer(client: TestClient[Any, Any], body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/filter", data=orjson.dumps(body))
    assert resp.status == 200
    answer: dict[str, Any] = orjson.loads(await resp.read())
    return answer


@pytest.mark.parametrize(
    ("nodes_synced", "devices_synced"), [(False, True), (True, False), (False, False)]
)
async def test_a_classed_pod_gets_an_error_until_the_caches_have_listed(
    aiohttp_client: ClientFactory, nodes_synced: bool, devices_synced: bool
) -> None:
    world = replace(snapshot(time.time()), nodes_synced=nodes_synced, devices_synced=devices_synced)
    client = await cluster_client(aiohttp_client, StateStore(snapshot=world))
    answer = await filter_answer(client, {"Pod": pod("anonymiser"), "NodeNames": ["edge1", "gw2"]})
    assert answer["Error"] == NOT_SYNCED
    assert answer["NodeNames"] is None
    assert answer["FailedNodes"] == {}
    # Full-Node requests too.
    nodes = [{"metadata": {"name": "edge1"}}]
    answer = await filter_answer(client, {"Pod": pod("anonymiser"), "Nodes": {"items": nodes}})
    assert answer["Error"] == NOT_SYNCED
    # A pod without a class needs no cache: answered as usual.
    plain = await filter_answer(client, {"Pod": pod(None), "NodeNames": ["edge1", "gw2"]})
    assert plain["Error"] == ""
    assert plain["NodeNames"] == ["edge1", "gw2"]


async def test_once_synced_the_same_request_is_answered(aiohttp_client: ClientFactory) -> None:
    client = await cluster_client(aiohttp_client, StateStore(snapshot=snapshot(time.time())))
    answer = await filter_answer(client, {"Pod": pod("anonymiser"), "NodeNames": ["edge1", "gw2"]})
    assert answer["Error"] == ""
    assert "edge1" in answer["NodeNames"]
