"""Node load from a real Prometheus reaches the scores, and its loss degrades gracefully."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloud4iot.policy.store import PolicyStore
from extender.app import create_app
from extender.settings import Settings
from extender.state.snapshot import NodeFacts, Snapshot
from extender.state.store import StateStore
from tests.waiting import eventually

pytestmark = pytest.mark.prometheus

NODES = {
    "gw-home": "gateway",
    "gw-hospital": "gateway",
    "edge-1": "edge",
    "cloud-1": "cloud",
    "cloud-2": "cloud",
}
ANONYMISER = {"metadata": {"name": "a", "annotations": {"cloud4iot.io/function": "anonymiser"}}}


def node_facts() -> dict[str, NodeFacts]:
    return {
        n: NodeFacts.from_node({"metadata": {"name": n, "labels": {"cloud4iot.io/tier": t}}})
        for n, t in NODES.items()
    }


async def scores(client: Any) -> dict[str, int]:
    resp = await client.post(
        "/prioritize", data=orjson.dumps({"Pod": ANONYMISER, "NodeNames": ["gw-home", "edge-1"]})
    )
    return {s["Host"]: s["Score"] for s in await resp.json()}


@pytest.fixture
def instance_label_policy(fast_policy: Path) -> Path:
    fast_policy.write_text(
        fast_policy.read_text().replace("nodeLabel: node", "nodeLabel: instance")
    )
    return fast_policy


async def test_node_label_mismatch_is_reported_by_node_name(
    aiohttp_client: Any,
    prom_stack: Any,
    instance_label_policy: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The most common failure of load-aware schedulers: series carry the node name
    # under another label. Here `instance` holds the scrape address, not the node.
    settings = Settings(policy_path=instance_label_policy, prometheus_url=prom_stack.prometheus_url)
    store = StateStore(
        snapshot=Snapshot(nodes=node_facts(), nodes_synced=True, devices_synced=True)
    )
    client = await aiohttp_client(
        create_app(settings, policy=PolicyStore.open(instance_label_policy), state=store)
    )

    async def reported() -> bool:
        text = await (await client.get("/metrics")).text()
        return "cloud4iot_extender_nodes_without_metrics 5.0" in text

    await eventually(reported, within=20, interval=0.25)
    warning = next(r.getMessage() for r in caplog.records if "no load metrics" in r.getMessage())
    assert "cloud-1, cloud-2, edge-1, gw-home, gw-hospital" in warning
    assert "'instance'" in warning
    # Every node then scores with the neutral load part (fail open), none is refused.
    resp = await client.post(
        "/filter", data=orjson.dumps({"Pod": ANONYMISER, "NodeNames": list(NODES)})
    )
    assert (await resp.json())["NodeNames"] == ["gw-home", "gw-hospital", "edge-1"]


@pytest.fixture
def no_node_policy(fast_policy: Path) -> Path:
    fast_policy.write_text(
        fast_policy.read_text().replace("nodeLabel: node", "nodeLabel: nodename")
    )
    return fast_policy


async def test_series_without_a_node_label_are_said_in_readyz_and_metrics(
    aiohttp_client: Any, prom_stack: Any, no_node_policy: Path
) -> None:
    # A node label no series carries: what `by (node)` returns on both common stacks
    # (tests/state/test_prometheus_presets.py). Not every node "unloaded" in silence.
    fast_policy = no_node_policy
    settings = Settings(policy_path=fast_policy, prometheus_url=prom_stack.prometheus_url)
    store = StateStore(
        snapshot=Snapshot(nodes=node_facts(), nodes_synced=True, devices_synced=True)
    )
    client = await aiohttp_client(
        create_app(settings, policy=PolicyStore.open(fast_policy), state=store)
    )

    async def said() -> bool:
        body = await (await client.get("/readyz")).json()
        return any("none carries the node label 'nodename'" in d for d in body["degraded"])

    await eventually(said, within=20, interval=0.25)
    text = await (await client.get("/metrics")).text()
    line = next(
        x
        for x in text.splitlines()
        if x.startswith("cloud4iot_extender_prometheus_series_without_node ")
    )
    assert float(line.split()[-1]) >= 2  # every series of both queries (one per node)
    assert store.snapshot.load == {}


async def test_scores_follow_simulated_load_and_survive_prometheus_loss(
    aiohttp_client: Any, prom_stack: Any, fast_policy: Path
) -> None:
    settings = Settings(policy_path=fast_policy, prometheus_url=prom_stack.prometheus_url)
    store = StateStore(
        snapshot=Snapshot(nodes=node_facts(), nodes_synced=True, devices_synced=True)
    )
    app = create_app(settings, policy=PolicyStore.open(fast_policy), state=store)
    client = await aiohttp_client(app)

    # Every topology node gets load data (the node label matches), gaps are none.
    async def all_loaded() -> bool:
        return set(store.snapshot.load) >= set(NODES)

    await eventually(all_loaded, within=40, interval=0.25)
    text = await (await client.get("/metrics")).text()
    assert "cloud4iot_extender_nodes_without_metrics 0.0" in text

    prom_stack.set_load("gw-home", cpu=0.1, memory=0.1)
    idle: dict[str, int] = {}

    async def settled_idle() -> bool:
        idle.update(await scores(client))
        return idle["gw-home"] == 3  # anonymiser: tier 0 (prefers edge), load 0.9 -> 10*0.9/3

    await eventually(settled_idle, within=40, interval=0.25)
    prom_stack.set_load("gw-home", cpu=0.7, memory=0.1)

    async def score_dropped() -> bool:
        return (await scores(client))["gw-home"] < idle["gw-home"]

    await eventually(score_dropped, within=40, interval=0.25)

    # Load the gateway: its score drops, then it is filtered (cpu limit 85 %).
    prom_stack.set_load("gw-home", cpu=0.95, memory=0.2)

    async def gateway_filtered() -> bool:
        resp = await client.post(
            "/filter", data=orjson.dumps({"Pod": ANONYMISER, "NodeNames": ["gw-home", "edge-1"]})
        )
        body = await resp.json()
        return "gw-home" in body["FailedNodes"] and body["NodeNames"] == ["edge-1"]

    await eventually(gateway_filtered, within=40, interval=0.25)

    # Kill Prometheus: requests are still answered fast, from the last snapshot,
    # and readiness says "degraded" while staying ready.
    os.kill(prom_stack.prometheus_pid, signal.SIGKILL)

    async def degraded() -> bool:
        body = await (await client.get("/readyz")).json()
        return any(d.startswith("prometheus") for d in body["degraded"])

    await eventually(degraded, within=15, interval=0.25)
    resp = await client.get("/readyz")
    assert resp.status == 200
    latencies = []
    for _ in range(20):
        start = time.perf_counter()
        resp = await client.post(
            "/filter", data=orjson.dumps({"Pod": ANONYMISER, "NodeNames": list(NODES)})
        )
        latencies.append(time.perf_counter() - start)
        assert resp.status == 200
        assert "gw-home" in (await resp.json())["FailedNodes"]  # last snapshot still used
    # Not a timing assertion on speed, a guard that no request waited on Prometheus
    # (its client timeout is 2 s): even the slowest answer is far below that.
    assert max(latencies) < 1.0
    text = await (await client.get("/metrics")).text()
    age_line = next(
        line
        for line in text.splitlines()
        if line.startswith('cloud4iot_extender_data_age_seconds{source="prometheus"}')
    )
    assert float(age_line.split()[-1]) >= 0.0
