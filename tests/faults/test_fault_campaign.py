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
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from devcluster import kube
from devcluster.cluster import Devcluster
from devcluster.processes import is_alive
from tests.cluster_world import nearest_of, placement, scrape, until
from tests.devcluster.e2e_workloads import deployment
from tests.rebalancer.rebalancer_e2e_helpers import Radio, function_deployment, readyz
from tests.state.cluster_helpers import create_device, restart_apiserver

pytestmark = pytest.mark.cluster
T = TypeVar("T")
PATIENTS = {"gw-home": ["pa", "pb"], "gw-hospital": ["pc"]}
FORBIDDEN = {"mhealth-consolidator": {"cloud-1", "cloud-2"}, "anonymiser": {"cloud-1", "cloud-2"}}


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
        return placement(self.api, self.namespace)

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
            nearest = nearest_of(self.api, device)
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
                lambda d=device, g=gateway: nearest_of(kube_api, d) == g,  # type: ignore[misc]
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


def bound_within(world: World, deployment: str, replicas: int, what: str) -> None:
    """Wait until `replicas` pods of `deployment` are bound; else say why not."""

    def bound() -> bool:
        return sum(n.startswith(f"{deployment}-") for n in world.placement()) == replicas

    try:
        until(what, bound)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {why_not_bound(world, deployment)}") from None


def why_not_bound(world: World, deployment: str) -> str:
    """What a timeout waiting for a Deployment's pods must say, shortest first (CI cuts
    long messages): its pods grouped by where they are (node, or PodScheduled reason:
    message), then kube-scheduler's queues, then the extender's filter answers (since
    its last start)."""
    where: Counter[str] = Counter()
    for name, p in sorted(world.pods().items()):
        if not name.startswith(f"{deployment}-"):
            continue
        if kube.is_bound(p):
            where[f"on {kube.node_of(p)}"] += 1
            continue
        scheduled = next((c for c in p.status.conditions or [] if c.type == "PodScheduled"), None)
        pinned = "pinned " if (p.metadata.annotations or {}).get("cloud4iot.io/narrowed") else ""
        state = (
            "no PodScheduled condition"
            if scheduled is None
            else (f"{scheduled.reason}: {(scheduled.message or '')[:160]}")
        )
        where[f"{pinned}{state}"] += 1
    parts = [f"pods {dict(where) or 'none'}"]
    for what, probe in (("scheduler queues", scheduler_queues), ("extender", extender_answers)):
        try:
            parts.append(f"{what} {probe(world.cluster)}")
        except Exception as exc:  # a diagnosis must not hide the failure it explains
            parts.append(f"{what} unreadable ({exc})")
    return "; ".join(parts)


def scheduler_queues(cluster: Devcluster) -> dict[str, int]:
    """kube-scheduler's pending pods per queue (active, backoff, unschedulable, gated)."""
    samples = scrape(cluster.scheduler_metrics_url, "scheduler_pending_pods", insecure=True)
    return {k.split('queue="')[1].split('"')[0]: int(v) for k, v in samples.items() if v}


def extender_answers(cluster: Devcluster) -> dict[str, int]:
    """The restarted extender's filter requests by mode and code, and its refusals."""
    url = cluster.state().components["extender"].health_url.replace("/readyz", "/metrics")
    samples = scrape(url, "cloud4iot_extender_")
    return {
        k: int(v)
        for k, v in samples.items()
        if v and (k.startswith('requests_total{verb="filter"') or k.startswith("decisions_total"))
    }


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
    bound_within(world, "after-apiserver", 1, "a pod created after the restart bound")
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
    bound_within(world, "burst", 6, "the burst bound")
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
