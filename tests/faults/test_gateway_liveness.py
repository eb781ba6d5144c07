"""Gateway liveness on the devcluster (issue 23 item 2, issue 26 item 2).

Real gateway monitors (host processes of `cloud4iot-gateway-monitor`, replaying
stationary wearables, with the cluster's kubeconfig as the demo runs them) renew their
Lease and write their GatewayReport on change; the devcluster's real extender and
rebalancer read both. Four patients, two per gateway; one function each, two classes:
`whenDeviceAway: fallback` (the shipped mhealth-consolidator) and `park` (the same class
with park, written into the cluster's policy here).

- At rest, the writes per minute by kind (Leases, reports, Devices) are counted from
  watches: the Leases carry liveness, the reports change only with what is heard.
- An apiserver outage of 10, 40 and 120 s (killed, started again with its command line
  after that long): nothing moves, nothing parks, no decision changes.
- One monitor killed (SIGKILL: its report keeps listing its devices, its Lease stops):
  its devices are unknown, not away (the rebalancer holds `gateway-silent`), nothing
  moves or parks for longer than the sighting age plus the Lease duration. Then its
  node NotReady too (the gateway down as a whole), and the other gateway's node
  NotReady while its monitor renews: nothing moves, parks or changes nearest. Both
  nodes Ready again and the monitor restarted: it renews and nothing moves either.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch

from bench import synthetic_traces
from devcluster import kube
from devcluster.cluster import GATEWAY_NAMESPACE, Devcluster
from gateway_monitor import traces
from tests.cluster_world import (
    Monitors,
    nearest_of,
    node_ready,
    nodes_not_ready,
    placement,
    scrape,
    until,
)
from tests.rebalancer.rebalancer_e2e_helpers import function_deployment
from tests.state.cluster_helpers import create_device, restart_apiserver

pytestmark = pytest.mark.cluster
FALLBACK, PARK = "mhealth-consolidator", "mhealth-parked"
PATIENTS = {"gw-home": {"pa": FALLBACK, "pb": PARK}, "gw-hospital": {"pc": FALLBACK, "pd": PARK}}
# Seconds down, one after another; CLOUD4IOT_LIVENESS_OUTAGES="10 40" for fewer (a
# mutation run of the silent-gateway part: "").
OUTAGES = tuple(float(x) for x in os.environ.get("CLOUD4IOT_LIVENESS_OUTAGES", "10 40 120").split())
SETTLE = 45.0  # after the apiserver is back: the Lease duration (40 s) and then some
TRACE_SECONDS = 3000.0


@dataclass
class World:
    cluster: Devcluster
    api: client.ApiClient
    namespace: str
    monitors: Monitors
    devices: dict[str, str] = field(default_factory=dict)  # device -> its gateway
    functions: dict[str, str] = field(default_factory=dict)  # deployment -> device
    figures: dict[str, Any] = field(default_factory=dict)

    def placement(self) -> dict[str, tuple[str, str]]:
        return placement(self.api, self.namespace)

    def nearest(self) -> dict[str, str | None]:
        return {d: nearest_of(self.api, d) for d in self.devices}

    def replicas(self) -> dict[str, int]:
        apps = client.AppsV1Api(self.api)
        return {
            name: apps.read_namespaced_deployment(name, self.namespace).spec.replicas
            for name in self.functions
        }

    def moves(self) -> float:
        samples = scrape(
            f"{self.cluster.rebalancer_url}/metrics", "cloud4iot_rebalancer_moves_total"
        )
        return sum(samples.values())

    def held(self, limit: str) -> float:
        samples = scrape(
            f"{self.cluster.rebalancer_url}/metrics", "cloud4iot_rebalancer_moves_held_total"
        )
        return sum(v for k, v in samples.items() if f'limit="{limit}"' in k)

    def snapshot(self) -> dict[str, Any]:
        return {
            "placement": self.placement(),
            "nearest": self.nearest(),
            "replicas": self.replicas(),
            "moves": self.moves(),
        }


def park_policy(cluster: Devcluster) -> str:
    """The cluster's policy plus `mhealth-parked`: the consolidator with park."""
    original = cluster.policy_file.read_text()
    doc = yaml.safe_load(original)
    classes = doc["spec"]["classes"]
    classes[PARK] = dict(classes[FALLBACK], whenDeviceAway="park")
    cluster.write_policy(yaml.safe_dump(doc, sort_keys=False))
    return original


@pytest.fixture
def world(
    devcluster: Devcluster, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[World]:
    original = park_policy(devcluster)
    suffix = uuid.uuid4().hex[:4]
    records: dict[str, list[traces.TraceRecord]] = {g: [] for g in PATIENTS}
    devices: dict[str, str] = {}
    classes: dict[str, str] = {}
    for n, (gateway, patients) in enumerate(PATIENTS.items()):
        for m, (patient, cls) in enumerate(patients.items()):
            device = f"{patient}-{suffix}"
            address = f"C0:FF:EE:{suffix[:2]}:{suffix[2:]}:{2 * n + m:02X}".upper()
            create_device(kube_api, device, address)
            records[gateway] += synthetic_traces.stationary(
                address, -55.0, duration=TRACE_SECONDS, seed=2 * n + m + 1
            )
            devices[device], classes[device] = gateway, cls
    files = {}
    for gateway, recs in records.items():
        files[gateway] = tmp_path / f"{gateway}.jsonl"
        traces.write_trace(files[gateway], sorted(recs, key=lambda r: r.t))
    monitors = Monitors(devcluster, files, tmp_path)
    w = World(devcluster, kube_api, namespace, monitors, devices)
    try:
        for gateway in PATIENTS:
            monitors.start(gateway)
        for device, gateway in devices.items():
            until(f"{device} nearest {gateway}", lambda d=device, g=gateway: w.nearest()[d] == g)
        for device, cls in classes.items():
            name = f"fn-{device}"
            kube.create_deployment(kube_api, namespace, function_deployment(name, cls, device))
            w.functions[name] = device

        def placed() -> bool:
            where = {n.rsplit("-", 2)[0]: node for n, (_, node) in w.placement().items()}
            return len(where) == len(devices) and all(
                where.get(f"fn-{d}") == g for d, g in devices.items()
            )

        until("every function on its device's gateway", placed, 180)
        yield w
    finally:
        monitors.stop_all()
        devcluster.write_policy(original)
        print("\ngateway liveness figures:", w.figures)


def count_writes(api: client.ApiClient, seconds: int) -> dict[str, int]:
    """MODIFIED events in `seconds` per kind: the gateways' Leases, the reports, Devices."""
    counts: Counter[str] = Counter()
    custom, coordination = client.CustomObjectsApi(api), client.CoordinationV1Api(api)
    streams: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
        "leases": (coordination.list_namespaced_lease, (GATEWAY_NAMESPACE,)),
        "reports": (
            custom.list_cluster_custom_object,
            ("cloud4iot.io", "v1alpha1", "gatewayreports"),
        ),
        "devices": (custom.list_cluster_custom_object, ("cloud4iot.io", "v1alpha1", "devices")),
    }

    def run(kind: str) -> None:
        method, args = streams[kind]
        for event in watch.Watch().stream(method, *args, timeout_seconds=seconds):
            if event["type"] == "MODIFIED":
                counts[kind] += 1

    threads = [threading.Thread(target=run, args=(k,)) for k in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return dict(counts)


def renew_time(api: client.ApiClient, node: str) -> Any:
    lease = client.CoordinationV1Api(api).read_namespaced_lease(node, GATEWAY_NAMESPACE)
    return lease.spec.renew_time


def test_liveness_writes_at_rest_outages_and_a_silent_gateway(world: World) -> None:
    api, cluster = world.api, world.cluster
    # Each monitor made and renews its Lease.
    for gateway in PATIENTS:
        first = until(f"the Lease of {gateway}", lambda g=gateway: renew_time(api, g))
        until(f"{gateway} renewing", lambda g=gateway, f=first: renew_time(api, g) != f, 30)

    # Writes at rest: one minute of four stationary devices on two gateways.
    time.sleep(10)  # arrivals done
    writes = count_writes(api, 60)
    world.figures["writes_per_minute_at_rest"] = writes
    assert 2 * 4 <= writes.get("leases", 0) <= 2 * 8, writes  # 6 a minute per gateway
    # A report is written on change only, and a gateway's writes are report_interval
    # (2 s) apart whatever is due: at most 30 a minute per gateway, the bound that holds
    # at hospital density (0.72 writes per device per minute with 50 devices per
    # gateway). At this sparse site the stationary devices' noise (4 dB) crosses the
    # 2 dB step most of the time, so the bound is what is measured (28 a minute when
    # steps below 6 dB were held up to 10 s, which cost the nearest decision on real
    # radio: issue 19, BENCHMARKS.md; 97 with every 2 dB step and the 10 s heartbeat,
    # the fallback without a Lease). The Devices are written only when a decision
    # changes (none here) or their display rssi drifts, at most every 5 min.
    assert writes.get("reports", 0) <= 2 * 31, writes
    assert writes.get("devices", 0) <= len(world.devices), writes

    # Apiserver outages: nothing moves, nothing parks, no decision changes.
    before = world.snapshot()
    assert before["replicas"] == dict.fromkeys(world.functions, 1)
    kwok_dir = cluster.kwok_workdir / "clusters" / cluster.name
    for outage in OUTAGES:
        # The devcluster's supervisor would restart it within 3 s: paused meanwhile.
        supervisor = cluster.state().supervisor_pid
        assert supervisor is not None
        os.kill(supervisor, signal.SIGSTOP)
        try:
            down = restart_apiserver(kwok_dir, cluster.process_env(), down_for=outage)
        finally:
            os.kill(supervisor, signal.SIGCONT)
        back = time.monotonic()
        until("the apiserver serving again", lambda: world.placement(), 180)
        world.figures[f"apiserver_down_{outage:.0f}s"] = round(down, 1)
        world.figures[f"apiserver_back_after_{outage:.0f}s_outage"] = round(
            time.monotonic() - back, 1
        )
        time.sleep(SETTLE)
        after = until("a snapshot", world.snapshot, 60)
        assert after == before, {"outage": outage, "before": before, "after": after}

    # One monitor killed: its report still lists its devices, its Lease stops.
    silent_before = world.held("gateway-silent")
    world.monitors.kill("gw-hospital")
    stopped = renew_time(api, "gw-hospital")
    time.sleep(30 + 40 + 10)  # the sighting age, a Lease duration, and a rebalance pass
    assert renew_time(api, "gw-hospital") == stopped
    after = world.snapshot()
    assert after == before, {"fault": "monitor killed", "before": before, "after": after}
    # Held by the rule, not by luck (the counter counts a workload's limit when it
    # changes: the outages above already counted it for each workload).
    world.figures["held_gateway_silent_before_kill"] = silent_before
    world.figures["held_gateway_silent"] = world.held("gateway-silent")
    assert world.held("gateway-silent") > 0

    # The gateway down as a whole: gw-hospital's node NotReady too (monitor still
    # gone), and gw-home NotReady while its monitor keeps renewing (a kubelet down,
    # the containers running on). gw-hospital's devices stay unknown; gw-home's stay
    # heard: NotReady is the kubelet's state, not the radio's. Nothing moves, parks or
    # changes nearest, for longer than the sighting age and a rebalance pass.
    assert node_ready(api, "gw-hospital") == "True"
    home_renewed = renew_time(api, "gw-home")
    down = time.monotonic()
    with nodes_not_ready(cluster, api, PATIENTS):
        time.sleep(30 + 10)
        assert renew_time(api, "gw-home") != home_renewed  # its monitor renews on
        assert {g: node_ready(api, g) for g in PATIENTS} == dict.fromkeys(PATIENTS, "Unknown")
        after = world.snapshot()
        assert after == before, {"fault": "gateways NotReady", "before": before, "after": after}
    world.figures["nodes_not_ready_s"] = round(time.monotonic() - down, 1)
    # Back: the nodes Ready (and untainted) again; gw-hospital's monitor restarted,
    # renews and adopts its report; still nothing moves.
    world.monitors.start("gw-hospital")
    until("gw-hospital renewing again", lambda: renew_time(api, "gw-hospital") != stopped, 60)
    time.sleep(15)
    after = world.snapshot()
    assert after == before, {"fault": "gateway back", "before": before, "after": after}
