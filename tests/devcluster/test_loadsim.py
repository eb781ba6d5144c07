"""The load simulator: counters that encode the load, and its HTTP API."""

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from devcluster.kube import model
from devcluster.loadsim import LoadModel, create_app, pod_requests_by_node
from devcluster.topology import NodeSpec

GATEWAY = NodeSpec(name="gw", tier="gateway", arch="arm64", cpu="2", memory="2Gi")
CLOUD = NodeSpec(name="cloud", tier="cloud", arch="amd64", cpu="500m", memory="8Gi")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples(model_: LoadModel) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in model_.collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def cpu_seconds(values: dict[Any, float], node: str, cpu: str, mode: str) -> float:
    key = ("node_cpu_seconds_total", (("cpu", cpu), ("mode", mode), ("node", node)))
    return values[key]


def test_idle_counter_grows_by_one_minus_load_per_cpu() -> None:
    clock = FakeClock()
    sim = LoadModel([GATEWAY], idle_load=0.05, clock=clock)
    sim.set_manual("gw", cpu=0.8, memory=None)
    before = samples(sim)
    clock.now += 10
    after = samples(sim)
    for cpu in ("0", "1"):
        idle = cpu_seconds(after, "gw", cpu, "idle") - cpu_seconds(before, "gw", cpu, "idle")
        busy = sum(
            cpu_seconds(after, "gw", cpu, m) - cpu_seconds(before, "gw", cpu, m)
            for m in ("user", "system")
        )
        assert idle == pytest.approx(2.0)
        assert busy == pytest.approx(8.0)


def test_load_change_keeps_time_already_spent_at_the_old_load() -> None:
    clock = FakeClock()
    sim = LoadModel([GATEWAY], idle_load=0.0, clock=clock)
    clock.now += 10  # 10 s fully idle
    sim.set_manual("gw", cpu=1.0, memory=None)
    clock.now += 10  # 10 s fully busy
    values = samples(sim)
    assert cpu_seconds(values, "gw", "0", "idle") == pytest.approx(10.0)


def test_memory_gauges_and_one_cpu_series_for_fractional_capacity() -> None:
    sim = LoadModel([CLOUD], clock=FakeClock())
    sim.set_manual("cloud", cpu=None, memory=0.25)
    values = samples(sim)
    total = values[("node_memory_MemTotal_bytes", (("node", "cloud"),))]
    available = values[("node_memory_MemAvailable_bytes", (("node", "cloud"),))]
    assert total == 8 * 2**30
    assert available == pytest.approx(total * 0.75)
    cpus = {labels for (name, labels) in values if name == "node_cpu_seconds_total"}
    assert {dict(labels)["cpu"] for labels in cpus} == {"0"}


def test_pod_requests_set_the_load_and_manual_values_win() -> None:
    sim = LoadModel([GATEWAY], idle_load=0.05, clock=FakeClock())
    sim.set_pod_requests({"gw": (1.0, 2**30)})
    assert sim.snapshot()["gw"] == {
        "cpu": pytest.approx(0.55),
        "memory": pytest.approx(0.6),
        "source": "pods",
    }
    sim.set_manual("gw", cpu=0.9, memory=None)
    assert sim.snapshot()["gw"]["cpu"] == 0.9
    assert sim.snapshot()["gw"]["memory"] == pytest.approx(0.6)
    sim.clear_manual("gw")
    assert sim.snapshot()["gw"]["cpu"] == pytest.approx(0.55)


def pod(node: str | None, cpu: str, memory: str, deleting: bool = False) -> client.V1Pod:
    meta: dict[str, Any] = {"name": "p", "namespace": "default"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: dict[str, Any] = {
        "containers": [
            {"name": "a", "resources": {"requests": {"cpu": cpu, "memory": memory}}},
            {"name": "b"},
        ]
    }
    if node:
        spec["nodeName"] = node
    return model(client.V1Pod, {"metadata": meta, "spec": spec})


def test_pod_requests_are_summed_per_node_skipping_unbound_and_deleted_pods() -> None:
    pods = [
        pod("gw", "250m", "128Mi"),
        pod("gw", "500m", "128Mi"),
        pod(None, "4", "1Gi"),
        pod("gw", "8", "1Gi", deleting=True),
    ]
    assert pod_requests_by_node(pods) == {"gw": (pytest.approx(0.75), 256 * 2**20)}


ClientFactory = Callable[..., Any]


@pytest.fixture
async def api(aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    sim = LoadModel([GATEWAY, CLOUD])
    test_client: TestClient[Any, Any] = await aiohttp_client(create_app(sim))
    return test_client


async def test_put_load_shows_in_get_load_and_metrics(api: TestClient[Any, Any]) -> None:
    resp = await api.put("/load/gw", json={"cpu": 0.9, "memory": 0.5})
    assert resp.status == 200
    loads = await (await api.get("/load")).json()
    assert loads["gw"] == {"cpu": 0.9, "memory": 0.5, "source": "manual"}
    assert loads["cloud"]["source"] == "idle"
    text = await (await api.get("/metrics")).text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    available = {
        s.labels["node"]: s.value for s in families["node_memory_MemAvailable_bytes"].samples
    }
    assert available["gw"] == pytest.approx(2**30)
    idle = [s for s in families["node_cpu_seconds"].samples if s.labels.get("mode") == "idle"]
    assert {s.labels["node"] for s in idle} == {"gw", "cloud"}


async def test_delete_load_returns_a_node_to_idle(api: TestClient[Any, Any]) -> None:
    await api.put("/load/gw", json={"cpu": 0.9})
    resp = await api.delete("/load/gw")
    assert (await resp.json())["source"] == "idle"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/load/nope", {"cpu": 0.5}, 404),
        ("/load/gw", {"cpu": 1.5}, 400),
        ("/load/gw", {"cpu": "high"}, 400),
        ("/load/gw", {"disk": 0.5}, 400),
    ],
)
async def test_bad_load_requests_are_refused(
    api: TestClient[Any, Any], path: str, body: dict[str, Any], status: int
) -> None:
    resp = await api.put(path, json=body)
    assert resp.status == status
    assert (await (await api.get("/load")).json())["gw"]["source"] == "idle"
