"""When every node refuses a pod and some refusal can end without a cluster event
(load, an unregistered Device), the filter answers an error (kube-scheduler retries it
with backoff) instead of refusals (which park the pod until an event, up to 5 minutes).
Refusals an event ends (the writer's node nudge: proximity), or that nothing ends
(tiers), are answered as refusals. The real cluster side: tests/state/test_unannounced_refusals.py.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from conftest import ROOT, ClientFactory
from webhook_cases import TIERS, node, pod, snapshot

from cloud4iot.policy.store import PolicyStore
from extender.app import create_app
from extender.protocol import RETRY_PREFIX, retry_reason
from extender.scoring import Code, Verdict
from extender.settings import Settings
from extender.state.snapshot import LoadSample, Snapshot
from extender.state.store import StateStore

GATEWAYS = ["gw1", "gw2"]


def refused(node: str, code: Code, reason: str, unresolvable: bool = False) -> Verdict:
    return Verdict(node, False, 0, code, reason, unresolvable)


def test_overload_on_every_node_is_an_error_grouping_reasons() -> None:
    verdicts = [
        refused("gw1", Code.OVERLOADED, "cpu over the limit"),
        refused("gw2", Code.OVERLOADED, "cpu over the limit"),
        refused("cloud1", Code.TIER_NOT_ALLOWED, "tier cloud not allowed", True),
    ]
    why = retry_reason(verdicts)
    assert why is not None
    assert why.startswith(RETRY_PREFIX)
    assert why.endswith("2 node(s) cpu over the limit; 1 node(s) tier cloud not allowed")


@pytest.mark.parametrize(
    "code", [Code.OVERLOADED, Code.STALE_LOAD, Code.UNKNOWN_DEVICE, Code.DEVICES_NOT_SYNCED]
)
def test_one_unannounced_refusal_is_enough(code: Code) -> None:
    verdicts = [refused("gw1", Code.NOT_HEARD, "not heard"), refused("gw2", code, "transient")]
    assert retry_reason(verdicts) is not None


@pytest.mark.parametrize(
    "verdicts",
    [
        [],  # nothing asked
        [refused("gw1", Code.OVERLOADED, "busy"), Verdict("gw2", True, 5, Code.KEPT, "")],
        [refused("gw1", Code.NOT_HEARD, "not heard"), refused("gw2", Code.NOT_NEAREST, "no")],
        [refused("cloud1", Code.TIER_NOT_ALLOWED, "tier", True)],
    ],
    ids=["empty", "one-node-fits", "proximity-only", "unresolvable-only"],
)
def test_refusals_stay_refusals(verdicts: list[Verdict]) -> None:
    assert retry_reason(verdicts) is None


def test_long_lists_are_cut() -> None:
    verdicts = [refused(f"n{i}", Code.OVERLOADED, f"reason {i}") for i in range(6)]
    why = retry_reason(verdicts, shown=3)
    assert why is not None
    assert why.endswith("; 3 other reason(s)")


def loaded(world: Snapshot, cpu: float) -> Snapshot:
    now = time.time()
    return world.with_load({n: LoadSample(cpu=cpu, memory=0.3, at=now) for n in TIERS}, now)


async def client_for(aiohttp_client: ClientFactory, store: StateStore) -> TestClient[Any, Any]:
    settings = Settings(policy_path=ROOT / "policies" / "default.yaml")
    app = create_app(
        settings, policy=PolicyStore.open(settings.policy_path), state=store, sources=[]
    )
    return await aiohttp_client(app)


async def filter_answer(client: TestClient[Any, Any], body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/filter", data=orjson.dumps(body))
    assert resp.status == 200
    answer: dict[str, Any] = orjson.loads(await resp.read())
    return answer


async def test_the_webhook_answers_an_error_while_the_gateways_are_loaded(
    aiohttp_client: ClientFactory,
) -> None:
    store = StateStore(snapshot=loaded(snapshot(time.time()), cpu=0.97))
    client = await client_for(aiohttp_client, store)
    body = {"Pod": pod("anonymiser"), "NodeNames": GATEWAYS}
    answer = await filter_answer(client, body)
    assert answer["Error"].startswith(RETRY_PREFIX)
    assert answer["NodeNames"] is None
    assert answer["FailedNodes"] == {}
    # Full-Node mode answers the same error.
    nodes = [node(n, "gateway", "arm64") for n in GATEWAYS]
    full = await filter_answer(client, {"Pod": pod("anonymiser"), "Nodes": {"items": nodes}})
    assert full["Error"] == answer["Error"]
    # The load drops: the same request is answered with the nodes.
    store.snapshot = loaded(store.snapshot, cpu=0.2)
    answer = await filter_answer(client, body)
    assert answer["Error"] == ""
    assert answer["NodeNames"] == GATEWAYS


async def test_the_webhook_refuses_a_device_no_gateway_hears(aiohttp_client: ClientFactory) -> None:
    # The wearable is registered and heard by gw2 only; on gw1 alone it is refused
    # (the nudge of the nearest writer announces a change): no retry loop.
    world = snapshot(time.time())
    client = await client_for(aiohttp_client, StateStore(snapshot=world))
    answer = await filter_answer(
        client, {"Pod": pod("mhealth-consolidator", "wearable"), "NodeNames": ["gw1"]}
    )
    assert answer["Error"] == ""
    assert answer["NodeNames"] == []
    # Its Device unknown: retried.
    unknown = replace(world, devices={})
    client = await client_for(aiohttp_client, StateStore(snapshot=unknown))
    answer = await filter_answer(
        client, {"Pod": pod("mhealth-consolidator", "wearable"), "NodeNames": ["gw1"]}
    )
    assert "device wearable is not registered" in answer["Error"]
