"""Deploy on discovery end to end (issue 25, Verify): a REAL gateway monitor on
gw-hospital hears a fake BlueZ, and nothing is written by hand.

The monitor is `cloud4iot-gateway-monitor` run as installed, as a host process: the
rendered DaemonSet's args and env, the ServiceAccount token bound to a monitor pod on
gw-hospital (its only credential). HOST adaptations only: the policy file the ConfigMap
is made from, a loopback port, and the system bus is our private dbus-daemon, where a
fake org.bluez plays the radio for unmodified bleak.

The scene, on the devcluster's real extender, scheduler and rebalancer:
- A new patient's strap, switched on near gw-hospital, advertises Heart Rate (0x180D)
  from an unregistered static random address at -60 dBm, above the class's arrivalRSSI
  (-70); a stranger (no Heart Rate) and a strap at -85 dBm advertise beside it.
- The monitor reports the strap as a candidate in its own GatewayReport, the elected
  extender creates the Device, the monitor tracks it and reports its sighting, the
  extender creates the class's two template Deployments (reader, consolidator), and the
  real kube-scheduler places both pods on gw-hospital through our extender.
- Left on for 15 s at rest, nothing is parked: the monitor writes no report (nothing
  changed) and only its Lease renewals (every 10 s) keep the sighting fresh, though the
  class's awayAfter (5 s) is shorter than a renewal period.
- Switched off (the fake strap stops advertising): the monitor gives it up after its
  away timeout (30 s), the extender parks both Deployments awayAfter (5 s) later (the
  class's whenAway: park; the rebalancer's own park is put off), and forgets the Device
  after forgetAfter (30 s); the garbage collector takes the Deployments.
- The stranger and the weak strap never appear as candidates, Devices or workloads.

Apiserver writes during the scene (ADDED + MODIFIED + DELETED seen by watches, from
the moment the monitor starts until the Deployments are gone, 62-72 s) on four runs:
reports 4-5, Leases 7, Devices 4 (created, nearest gw-hospital, nearest none, deleted),
Deployments 18-20, pods 12, Events 17 (printed each run as "discovery scene writes";
BENCHMARKS.md keeps the table). With the rebalancer e2e's 6 s sightingMaxAge instead of
the shipped 30 s, the Device took 10-14 writes: the nearest decision flapped between the
Lease renewals (10 s) that keep a quiet present device's sighting fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.aio import watch
from kubernetes.aio.client import (
    ApiClient,
    AppsV1Api,
    CoordinationV1Api,
    CoreV1Api,
    CustomObjectsApi,
)

from cloud4iot.deviceclass import CLASS_PLURAL, device_name
from cloud4iot.devices import GROUP, PLURAL, REPORT_PLURAL, VERSION
from cloud4iot.vocabulary import DEVICE_ANNOTATION, DISCOVERY_PARKED_ANNOTATION
from devcluster.cluster import Devcluster
from devcluster.processes import free_port
from tests.discovery.world import deployments, device_reasons, devices_of
from tests.gateway_monitor.fake_bluez import FakeBlueZ, running_fake_bluez
from tests.gateway_monitor.node_tokens import (
    NAMESPACE,
    SERVICE_ACCOUNT,
    install_monitor_identity,
    monitor_pod,
    token,
)
from tests.install.render import find, render
from tests.rebalancer.rebalancer_e2e_helpers import PARK_CLASS, fast_policy, policy_version
from tests.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.dbus]

HOSPITAL = "gw-hospital"
HR = "0000180d-0000-1000-8000-00805f9b34fb"
STRAP = "C0:FF:EE:25:B0:01"  # static random (top bits 11): a new patient's strap
WEAK = "C0:FF:EE:25:B0:02"  # the same kind of strap, across the ward (below arrivalRSSI)
STRANGER = "DE:AD:BE:EF:25:B0"  # a kettle: no Heart Rate
FUNCTIONS = ("reader", "consolidator")
_META = ("labels", "annotations", "finalizers", "deletionTimestamp", "ownerReferences")
AWAY_AFTER = 5.0  # shorter than the Lease renewal (10 s) that refreshes a quiet sighting
FORGET_AFTER = 30.0
PRESENT = 15.0  # seconds the strap stays on, quiet, after its functions are placed


def strap_class(name: str, namespace: str) -> dict[str, Any]:
    def template(function: str) -> dict[str, Any]:
        app = f"hr-{function}"
        return {
            "name": function,
            "namespace": namespace,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": app}},
                "template": {
                    "metadata": {
                        "labels": {"app": app},
                        "annotations": {"cloud4iot.io/function": PARK_CLASS},
                    },
                    "spec": {
                        "schedulerName": "cloud4iot-scheduler",
                        "containers": [
                            {
                                "name": function,
                                "image": "cloud4iot/omh-consolidator:0.1.0",
                                "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}},
                            }
                        ],
                    },
                },
            },
        }

    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {
            "discovery": {"serviceUUIDs": ["180D"], "addressTypes": ["public", "random"]},
            "arrivalRSSI": -70,
            "admission": "auto",
            "maxDevices": 4,
            "awayAfter": f"{AWAY_AFTER:.0f}s",  # whenAway: park (the default)
            "forgetAfter": f"{FORGET_AFTER:.0f}s",
            "functions": [template(f) for f in FUNCTIONS],
        },
    }


@contextlib.contextmanager
def parking_policy(cluster: Devcluster) -> Iterator[None]:
    """The rebalancer e2e's fast policy with the shipped sightingMaxAge (30 s): a real
    monitor with a live Lease writes a present device only on change and its renewals
    (10 s) refresh the sighting, so the fast 6 s would make the nearest decision flap
    between renewals. The rebalancer's own park (deviceAwayAfter) is put off for 10
    minutes: here the DeviceClass parks."""
    original = cluster.policy_file.read_text()
    doc = yaml.safe_load(fast_policy(original))
    doc["spec"]["staleData"]["sightingMaxAge"] = "30s"
    doc["spec"]["rebalance"]["deviceAwayAfter"] = "10m"
    doc["metadata"]["name"] = "e2e-discovery"
    cluster.write_policy(yaml.safe_dump(doc, sort_keys=False))
    try:
        for url in (cluster.extender_url, cluster.rebalancer_url):
            deadline = time.monotonic() + 30
            while not policy_version(url).startswith("e2e-discovery@"):
                assert time.monotonic() < deadline, f"{url} did not load the policy"
                time.sleep(0.2)
        yield
    finally:
        cluster.write_policy(original)


def token_kubeconfig(cluster: Devcluster, bearer: str, path: Path) -> Path:
    """The admin kubeconfig's cluster with only the monitor's bound token as the user
    (what in-cluster config reads from the projected token)."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": bearer}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": SERVICE_ACCOUNT}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def monitor_argv(
    cluster: Devcluster, node: str, bus: str, kubeconfig: Path, port: int
) -> tuple[list[str], dict[str, str]]:
    """The rendered DaemonSet's container as a host process: (argv, env)."""
    ds = find(render(""), "DaemonSet", "cloud4iot-gateway-monitor")
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    env = {
        "NODE_NAME": node,  # fieldRef spec.nodeName
        "POD_NAMESPACE": ds["metadata"]["namespace"],  # fieldRef metadata.namespace
    }
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    env["DBUS_SYSTEM_BUS_ADDRESS"] = bus  # HOST: the fake BlueZ's bus, not /run/dbus
    env["KUBECONFIG"] = str(kubeconfig)  # HOST: the bound token, as in-cluster config
    args = []
    for a in container["args"]:
        a = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a)
        if a.startswith("--policy="):  # the ConfigMap's file: the cluster's policy
            a = f"--policy={cluster.policy_file}"
        args.append(a)
    exe = Path(sys.executable).with_name("cloud4iot-gateway-monitor")
    return [str(exe), *args, "--host=127.0.0.1", f"--port={port}"], env


class Strap:
    """A BLE advertiser on the fake BlueZ: an advert every 0.5 s while switched on."""

    def __init__(self, bluez: FakeBlueZ, address: str, rssi: int, uuids: list[str]) -> None:
        self.bluez, self.address, self.rssi, self.uuids = bluez, address, rssi, uuids
        self.on = True
        self.sent = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        n = 0
        while True:
            if self.on:
                jitter = (-1, 0, 1, 0)[n % 4]  # a stationary device's few dB of noise
                if self.bluez.advertise(
                    self.address, self.rssi + jitter, name="HRM", uuids=self.uuids
                ):
                    self.sent += 1
                n += 1
            await asyncio.sleep(0.5)


class Writes:
    """Every object written during the scene, per kind, from watches that start at the
    listing's resourceVersion (no initial ADDED for what existed before)."""

    def __init__(self, admin: ApiClient, namespace: str) -> None:
        custom, core = CustomObjectsApi(admin), CoreV1Api(admin)
        apps, coordination = AppsV1Api(admin), CoordinationV1Api(admin)
        self.streams: dict[str, tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]] = {
            "reports": (custom.list_cluster_custom_object, (GROUP, VERSION, REPORT_PLURAL)),
            "devices": (custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL)),
            "leases": (coordination.list_namespaced_lease, (NAMESPACE,)),
            "deployments": (apps.list_namespaced_deployment, (namespace,)),
            "pods": (core.list_namespaced_pod, (namespace,)),
            "events": (core.list_event_for_all_namespaces, ()),
        }
        self.counts: Counter[str] = Counter()
        self.candidates: set[str] = set()  # every address gw-hospital ever listed
        self.device_trail: list[str] = []  # what each Device version changed
        self._last: dict[str, dict[str, Any]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        ready = [asyncio.Event() for _ in self.streams]
        for (kind, stream), flag in zip(self.streams.items(), ready, strict=True):
            self.tasks.append(asyncio.create_task(self._watch(kind, *stream, flag)))
        await asyncio.gather(*(f.wait() for f in ready))

    async def _watch(
        self,
        kind: str,
        method: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        ready: asyncio.Event,
    ) -> None:
        listing = await method(*args)
        meta = listing["metadata"] if isinstance(listing, dict) else listing.metadata
        version = meta["resourceVersion"] if isinstance(meta, dict) else meta.resource_version
        ready.set()
        while True:
            w = watch.Watch()  # type: ignore[no-untyped-call]
            async with w.stream(  # type: ignore[no-untyped-call]
                method, *args, resource_version=version, timeout_seconds=300
            ) as stream:
                async for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self.counts[kind] += 1
                    raw = event["raw_object"]
                    if kind == "devices":
                        self.device_trail.append(f"{event['type']} {self._changed(raw)}")
                    if kind == "reports" and raw["metadata"]["name"] == HOSPITAL:
                        for c in (raw.get("status") or {}).get("candidates") or []:
                            self.candidates.add(c["address"])
            version = w.resource_version or version

    def _changed(self, obj: dict[str, Any]) -> str:
        """The parts of a Device this version changed (status fields, spec, metadata)."""
        name = obj["metadata"]["name"]
        before = self._last.get(name, {})
        self._last[name] = obj

        def parts(o: dict[str, Any]) -> dict[str, Any]:
            meta = {k: v for k, v in o.get("metadata", {}).items() if k in _META}
            status = {f"status.{k}": v for k, v in (o.get("status") or {}).items()}
            return {"spec": o.get("spec"), **meta, **status}

        old, new = parts(before), parts(obj)
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if "status.nearest" in changed:  # the nearest writer's decision: which node
            changed.append(f"->{(new.get('status.nearest') or {}).get('node')}")
        return ",".join(changed)

    async def stop(self) -> dict[str, int]:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return {k: self.counts[k] for k in self.streams}


async def test_a_strap_switched_on_is_discovered_placed_parked_and_forgotten(
    admin: ApiClient, devcluster: Devcluster, namespace: str, tmp_path: Path
) -> None:
    custom, apps, core = CustomObjectsApi(admin), AppsV1Api(admin), CoreV1Api(admin)
    await install_monitor_identity(admin)
    pod = await monitor_pod(core, HOSPITAL)
    kubeconfig = token_kubeconfig(devcluster, await token(core, pod), tmp_path / "kubeconfig")
    cls = f"hr-{uuid.uuid4().hex[:6]}"
    strap = device_name(cls, STRAP)
    deployments = [f"{f}-{strap}" for f in FUNCTIONS]
    port = free_port()
    log = tmp_path / "monitor.log"
    proc: asyncio.subprocess.Process | None = None
    fast = parking_policy(devcluster)
    await asyncio.to_thread(fast.__enter__)
    try:
        await custom.create_cluster_custom_object(
            GROUP, VERSION, CLASS_PLURAL, strap_class(cls, namespace)
        )
        async with running_fake_bluez() as (bus, bluez):
            writes = Writes(admin, namespace)
            await writes.start()
            began = time.monotonic()
            argv, env = monitor_argv(devcluster, HOSPITAL, bus.address, kubeconfig, port)
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    *argv, env={**os.environ, **env}, stdout=out, stderr=asyncio.subprocess.STDOUT
                )
            await eventually(
                lambda: bluez.adapter.discovering, within=30, what="the monitor scanning"
            )
            radio = [
                Strap(bluez, STRAP, -60, [HR]),
                Strap(bluez, WEAK, -85, [HR]),
                Strap(bluez, STRANGER, -45, []),
            ]
            try:
                # Discovered: the Device, then both template Deployments placed on the
                # gateway that hears it, by the real scheduler through our extender.
                await eventually(
                    lambda: _devices(custom, cls, has=strap),
                    within=30,
                    what="the Device",
                    interval=0.5,
                )
                found = time.monotonic()

                where: dict[str, str] = {}

                async def placed() -> bool:
                    pods = await core.list_namespaced_pod(
                        namespace, label_selector=f"{DEVICE_ANNOTATION}={strap}"
                    )
                    where.clear()
                    where.update(
                        (p.metadata.labels["app"], p.spec.node_name)
                        for p in pods.items
                        if p.spec.node_name and not p.metadata.deletion_timestamp
                    )
                    return len(where) == len(FUNCTIONS)

                await eventually(placed, within=40, what="both functions placed", interval=0.5)
                assert where == {f"hr-{f}": HOSPITAL for f in FUNCTIONS}
                on_hospital = time.monotonic()
                # Still on, at rest: its report is not rewritten (changes only), the
                # Lease renewals keep its sighting fresh; awayAfter (5 s) is shorter
                # than a renewal period, and still nothing is parked.
                await asyncio.sleep(PRESENT)
                listing = await apps.list_namespaced_deployment(namespace)
                replicas = {d.metadata.name: d.spec.replicas for d in listing.items}
                assert replicas == dict.fromkeys(deployments, 1), "parked while heard"
                assert "Parked" not in await device_reasons(core, strap)
                # Switched off: away after the monitor's 30 s, parked, then forgotten.
                radio[0].on = False
                off = time.monotonic()

                async def parked() -> bool:
                    listing = await apps.list_namespaced_deployment(namespace)
                    replicas = {d.metadata.name: d.spec.replicas for d in listing.items}
                    return all(replicas.get(d) == 0 for d in deployments)

                await eventually(parked, within=60, what="both functions parked", interval=0.5)
                parked_at = time.monotonic()
                listing = await apps.list_namespaced_deployment(namespace)
                for d in listing.items:  # by the DeviceClass, its replica count kept
                    assert d.metadata.annotations[DISCOVERY_PARKED_ANNOTATION] == "1"
                assert await _devices(custom, cls, has=strap), "forgotten before parked"
                await eventually(
                    lambda: _devices(custom, cls, lacks=strap),
                    within=60,
                    what="the Device forgotten",
                    interval=0.5,
                )
                forgotten = time.monotonic()
                assert forgotten - off >= FORGET_AFTER  # not before forgetAfter
                await eventually(
                    lambda: _deployments_gone(apps, namespace, deployments),
                    within=30,
                    what="the Deployments garbage-collected",
                    interval=0.5,
                )
                ended = time.monotonic()
            finally:
                counts = await writes.stop()
                for s in radio:
                    s.task.cancel()
                metrics: dict[str, float] = {}
                with contextlib.suppress(OSError):
                    metrics = await asyncio.to_thread(_scrape, port)
                await _stop(proc)
            # Nothing for the stranger or the weak strap; the monitor said so too.
            assert writes.candidates == {STRAP}
            assert set(await _devices(custom, cls)) == set()
            assert metrics.get('result="dropped"', 0) > 0  # the stranger and the weak strap
            assert radio[1].sent > 0
            assert radio[2].sent > 0
            reasons = await device_reasons(core, strap)
            assert {"Discovered", "Approved", "Instantiated", "Parked", "Forgotten"} <= reasons
            assert "Restored" not in reasons  # never parked while it was heard
            print(
                "\ndiscovery scene writes:",
                counts,
                {
                    "device_after_s": round(found - began, 1),
                    "placed_after_s": round(on_hospital - found, 1),
                    "parked_after_off_s": round(parked_at - off, 1),
                    "forgotten_after_off_s": round(forgotten - off, 1),
                    "scene_s": round(ended - began, 1),
                },
            )
            print("Device writes:", Counter(writes.device_trail))
            # Bounded: one strap's whole life is a few dozen writes, not a stream.
            assert counts["devices"] <= 6, counts  # made, nearest, away, deleted: 4
            assert counts["reports"] <= 12, counts  # 4 to 5
    finally:
        await _stop(proc)
        with contextlib.suppress(Exception):
            await custom.delete_cluster_custom_object(GROUP, VERSION, CLASS_PLURAL, cls)
        with contextlib.suppress(Exception):
            await core.delete_namespaced_pod(pod, NAMESPACE, grace_period_seconds=0)
        await asyncio.to_thread(fast.__exit__, None, None, None)
        if log.exists():
            print("\n--- monitor log (tail):\n" + log.read_text(errors="replace")[-3000:])


async def _stop(proc: asyncio.subprocess.Process | None) -> None:
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def _devices(
    custom: CustomObjectsApi, cls: str, *, has: str | None = None, lacks: str | None = None
) -> Any:
    names = await devices_of(custom, cls)
    if has is not None:
        return has in names
    if lacks is not None:
        return lacks not in names
    return names


async def _deployments_gone(apps: AppsV1Api, namespace: str, names: list[str]) -> bool:
    return not set(await deployments(apps, namespace)) & set(names)


def _scrape(port: int) -> dict[str, float]:
    """cloud4iot_gateway_monitor_adverts_total by its labels (the monitor's /metrics)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cloud4iot_gateway_monitor_adverts_total{"):
            labels, _, value = line.rpartition(" ")
            out[labels[labels.index("{") + 1 : -1]] = float(value)
    return out
