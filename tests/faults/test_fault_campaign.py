"""A fault campaign on the devcluster: each fault is injected into a running world of
managed functions, and afterwards no pod is lost, none runs on a tier its class
forbids, and none moved (no fault here is a reason to move anything). One baseline is
carried through every fault; it grows only by the pods the test itself creates.

The world: three patients' consolidators (confidential, each on the gateway that hears
its wearable, sightings refreshed every second as monitors do), two anonymisers and an
unmanaged pod. Faults, one after another: Prometheus killed (the supervisor restarts
it), Prometheus hung (SIGSTOP) and resumed, kube-apiserver restarted, the extender
killed while pods are being scheduled, one gateway's monitor cut off for less than the
sighting max age and back, the rebalancer's leader killed. The figures (recovery times,
the extender's memory) are printed and written to RELIABILITY.md by hand from a run.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from devcluster import kube
from devcluster.cluster import Devcluster
from devcluster.processes import is_alive
from tests.devcluster.e2e_workloads import deployment
from tests.rebalancer.rebalancer_e2e_helpers import Radio, function_deployment, readyz
from tests.state.cluster_helpers import create_device, device_status, restart_apiserver

pytestmark = pytest.mark.cluster
T = TypeVar("T")
PATIENTS = {"gw-home": ["pa", "pb"], "gw-hospital": ["pc"]}
FORBIDDEN = {"mhealth-consolidator": {"cloud-1", "cloud-2"}, "anonymiser": {"cloud-1", "cloud-2"}}


def until(what: str, probe: Callable[[], T | None], timeout: float = 120.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except Exception:  # the apiserver may be down: that is the point
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class World:
    cluster: Devcluster
    api: client.ApiClient
    namespace: str
    radio: Radio
    devices: dict[str, str] = field(default_factory=dict)  # device -> its gateway
    figures: dict[str, Any] = field(default_factory=dict)

    def pods(self) -> dict[str, client.V1Pod]:
        items = client.CoreV1Api(self.api).list_namespaced_pod(self.namespace).items
        return {p.metadata.name: p for p in items if not kube.is_deleted(p)}

    def placement(self) -> dict[str, tuple[str, str]]:
        """Running pods: name -> (uid, node)."""
        return {
            name: (p.metadata.uid, kube.node_of(p))
            for name, p in self.pods().items()
            if kube.is_bound(p)
        }

    def with_created(
        self, before: dict[str, tuple[str, str]], deployment: str, replicas: int
    ) -> dict[str, tuple[str, str]]:
        """The baseline plus the running pods of a Deployment this test created, and
        nothing else: a pod lost or moved by a fault never becomes the new normal."""
        added = {
            name: where
            for name, where in self.placement().items()
            if name.startswith(f"{deployment}-") and name not in before
        }
        assert len(added) == replicas, {"deployment": deployment, "added": added}
        return before | added

    def check(self, before: dict[str, tuple[str, str]], fault: str) -> None:
        """No pod lost, none moved, none on a forbidden tier, every one bound."""

        def complete() -> dict[str, tuple[str, str]] | None:
            now = self.placement()
            return now if len(now) >= len(before) else None

        after = until(f"every pod bound again after {fault}", complete, 120)
        assert after == before, {"fault": fault, "before": before, "after": after}
        for pod in self.pods().values():
            function = (pod.metadata.annotations or {}).get("cloud4iot.io/function")
            assert kube.node_of(pod) not in FORBIDDEN.get(function or "", set()), pod.metadata.name
        for device, gateway in self.devices.items():
            nearest = (device_status(self.api, device).get("nearest") or {}).get("node")
            assert nearest == gateway, (fault, device, nearest)


@pytest.fixture
def world(devcluster: Devcluster, kube_api: client.ApiClient, namespace: str) -> Iterator[World]:
    radio = Radio(kube_api)
    w = World(devcluster, kube_api, namespace, radio)
    suffix = uuid.uuid4().hex[:4]
    for gateway, patients in PATIENTS.items():
        for p in patients:
            device = f"{p}-{suffix}"
            create_device(
                kube_api, device, f"C0:FF:EE:{suffix[:2]}:{suffix[2:]}:{len(w.devices):02X}"
            )
            radio.set(device, gateway, -55)
            w.devices[device] = gateway
            until(
                f"{device} nearest {gateway}",
                lambda d=device, g=gateway: (
                    (device_status(kube_api, d).get("nearest") or {}).get("node") == g
                ),  # type: ignore[misc]
            )
            kube.create_deployment(
                kube_api, namespace, function_deployment(f"omh-{p}", "mhealth-consolidator", device)
            )
    kube.create_deployment(
        kube_api, namespace, deployment("anon", replicas=2, function="anonymiser")
    )
    kube.create_deployment(kube_api, namespace, deployment("plain", scheduler="default-scheduler"))
    until("the world placed", lambda: len(w.placement()) == 6 and w.placement())
    try:
        yield w
    finally:
        radio.close()
        print("\nfault campaign figures:", w.figures)


def burst_pods(world: World) -> list[str]:
    """Each burst pod's node, pin and scheduling condition: what a timeout needs to say."""
    out = []
    for name, p in world.pods().items():
        if not name.startswith("burst"):
            continue
        conditions = [
            f"{c.type}={c.status} {c.reason}: {c.message}" for c in p.status.conditions or []
        ]
        annotations = p.metadata.annotations or {}
        out.append(
            f"{name} node={p.spec.node_name} narrowed={annotations.get('cloud4iot.io/narrowed')}"
            f" deleting={p.metadata.deletion_timestamp is not None} {conditions}"
        )
    return out


def test_no_pod_is_lost_or_moved_by_any_fault(world: World) -> None:
    cluster, api = world.cluster, world.api
    extender_pid = cluster.state().components["extender"].pid
    assert extender_pid is not None
    world.figures["extender_rss_kib_before"] = rss_kib(extender_pid)
    survived = 0

    # 1. Prometheus killed: the supervisor brings it back; meanwhile the load is stale.
    before = world.placement()
    prom = cluster.state().components["prometheus"].pid
    assert prom is not None
    os.kill(prom, signal.SIGKILL)
    started = time.monotonic()
    until(
        "Prometheus restarted",
        lambda: (p := cluster.state().components["prometheus"].pid) != prom and p and is_alive(p),
        60,
    )
    world.figures["prometheus_killed_back_s"] = round(time.monotonic() - started, 1)
    world.check(before, "prometheus killed")
    survived += 1

    # 2. Prometheus hung for 20 s: refreshes time out; answers come from the snapshot.
    prom = cluster.state().components["prometheus"].pid
    assert prom is not None
    os.kill(prom, signal.SIGSTOP)
    try:
        time.sleep(20)
        health = until(
            "an answer from the hung-Prometheus extender", lambda: readyz(cluster.extender_url)
        )
        world.figures["readyz_while_prometheus_hung"] = health.get("degraded")
        assert any("prometheus" in d for d in health["degraded"])
    finally:
        os.kill(prom, signal.SIGCONT)
    world.check(before, "prometheus hung")
    survived += 1

    # 3. kube-apiserver restarted (killed, started again with its command line).
    down = restart_apiserver(
        cluster.kwok_workdir / "clusters" / cluster.name, cluster.process_env()
    )
    world.figures["apiserver_down_s"] = round(down, 1)
    started = time.monotonic()

    def created() -> bool:
        kube.create_deployment(
            api, world.namespace, deployment("after-apiserver", function="anonymiser")
        )
        return True

    until("the restarted apiserver to take a Deployment", created, 90)
    world.figures["apiserver_restart_to_serving_s"] = round(time.monotonic() - started, 1)
    until(
        "a pod created after the restart bound", lambda: "after-apiserver" in str(world.placement())
    )
    world.figures["apiserver_restart_to_new_pod_bound_s"] = round(time.monotonic() - started, 1)
    before = world.with_created(before, "after-apiserver", 1)
    world.check(before, "apiserver restarted")
    survived += 1

    # 4. The extender killed while pods are being scheduled; back 5 s later.
    kube.create_deployment(
        api, world.namespace, deployment("burst", replicas=6, function="anonymiser")
    )
    pid = cluster.state().components["extender"].pid
    assert pid is not None
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    time.sleep(5)
    cluster.start_component("extender")
    started = time.monotonic()
    try:
        until("the burst bound", lambda: sum(n.startswith("burst") for n in world.placement()) == 6)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the burst's pods: {burst_pods(world)}") from None
    world.figures["extender_back_to_burst_bound_s"] = round(time.monotonic() - started, 1)
    before = world.with_created(before, "burst", 6)
    world.check(before, "extender killed mid-scheduling")
    survived += 1

    # 5. One gateway's monitor cut off for 15 s (under the 30 s sighting max age), then back.
    device = next(d for d, g in world.devices.items() if g == "gw-hospital")
    rssi = world.radio.levels.pop((device, "gw-hospital"))  # its monitor falls silent
    time.sleep(15)
    assert rssi is not None
    world.radio.set(device, "gw-hospital", rssi)
    world.check(before, "gateway monitor cut off and back")
    survived += 1

    # 6. The rebalancer's leader killed (SIGKILL: no Lease handed back), started again.
    pid = cluster.state().components["rebalancer"].pid
    assert pid is not None
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    time.sleep(3)
    cluster.start_component("rebalancer")
    until("the rebalancer leads again", lambda: readyz(cluster.rebalancer_url)["leading"], 60)
    time.sleep(5)
    world.check(before, "rebalancer leader killed")
    survived += 1

    extender_pid = cluster.state().components["extender"].pid
    assert extender_pid is not None
    world.figures["extender_rss_kib_after"] = rss_kib(extender_pid)
    world.figures["faults_survived"] = f"{survived}/6"
    rebalancer_events = [
        e
        for e in client.CoreV1Api(api).list_namespaced_event(world.namespace).items
        if e.source is not None and e.source.component == "cloud4iot-rebalancer"
    ]
    assert rebalancer_events == [], [e.message for e in rebalancer_events]
    assert survived == 6
