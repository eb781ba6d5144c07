"""Hospital-scale sighting bench (issue 23 item 1): sightings -> decisions -> moves.

    python -m devcluster bench hospital-sightings [--gateways 200] [--devices 10000]
        [--rest 180] [--walk 420] [--functions 20] [--json FILE]

A devcluster of its own (real etcd, kube-apiserver, scheduler, controller-manager, kwok
nodes; the extender with its nearest writer and report keeper; the rebalancer;
Prometheus) with ``--gateways`` gateway nodes in corridors of 20 (bench/hospital_world.py)
plus 10 edge and 10 cloud nodes. In this process, one gateway monitor per gateway, each
the real code: ``Monitor`` (registry lookup -> ``Tracker``) -> ``Publisher`` /
``PublishPlan`` -> ``write_report`` on its GatewayReport, and ``LeaseRenewer`` on its
Lease, every one with its OWN credentials: a TokenRequest of the shipped monitors'
ServiceAccount bound to a pod on its node (what kubelet mounts), so the shipped RBAC and
admission policies judge every write. What is not the real monitor: the adverts come
from the synthetic world instead of BlueZ, and the Device registry is filled once from
the bench's list instead of 200 Device watches (see BENCHMARKS.md).

Phases: warm-up (until every Device has ``status.nearest``), ``--rest`` seconds at rest
(no one walks; the apiserver's counters before and after), then ``--walk`` seconds with
5 % of the wearables walking between neighbouring gateways. ``--functions`` walkers get
an mhealth-consolidator Deployment. Measured per phase: apiserver write requests/s and
request bytes/s by resource (its /metrics), etcd's DB size (and, every 15 s from the
rest phase on, etcd's own file size, size in use and compacted revision: whether it levels
off once the apiserver compacts), CPU per process, watch events
per watcher (this process watches Devices, GatewayReports and Leases as the extender
does), the time from each true move to ``status.nearest`` and to the function's new pod,
and /filter latency sampled twice a second. Checks: every Device decided, every bound
function on its Device's nearest gateway, no cross-gateway write accepted. Prints
Markdown; never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from bench import hospital_world as hw
from bench.kube_raw import Api, gather_limited
from bench.sched_workload import SHAPE, parse_samples
from bench.scheduler_throughput import cpu_now, process_pids
from cloud4iot.devices import APPLY_PATCH, GROUP, REPORT_PLURAL, VERSION
from cloud4iot.policy.loader import load_policy
from devcluster.cluster import GATEWAY_NAMESPACE, Devcluster
from gateway_monitor.backoff import backoff_delays
from gateway_monitor.lease import LeaseRenewer, lease_body
from gateway_monitor.metrics import Metrics
from gateway_monitor.monitor import Monitor
from gateway_monitor.publisher import Publisher, PublishPlan
from gateway_monitor.registry import DeviceSpec, Registry
from gateway_monitor.report import report_body
from gateway_monitor.scanner import Advert
from gateway_monitor.tracker import Tracker

NAMESPACE = "bench"
PER_CORRIDOR = 20
NOISE_DB, LOSS = 4.0, 0.10
DEVICES = f"/apis/{GROUP}/{VERSION}/devices"
REPORTS = f"/apis/{GROUP}/{VERSION}/{REPORT_PLURAL}"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{GATEWAY_NAMESPACE}/leases"
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "CREATE", "UPDATE"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def topology(gws: list[hw.Gateway]) -> dict[str, Any]:
    nodes = [{"name": g.name, "tier": "gateway", **SHAPE["gateway"]} for g in gws]
    nodes += [{"name": f"edge-{i:02d}", "tier": "edge", **SHAPE["edge"]} for i in range(10)]
    nodes += [{"name": f"cloud-{i:02d}", "tier": "cloud", **SHAPE["cloud"]} for i in range(10)]
    return {"nodes": nodes}


# --- the apiserver's counters --------------------------------------------------------


def writes_by_resource(text: str) -> dict[str, tuple[float, float]]:
    """resource (its subresources included, as the body-size metric has no subresource
    label) -> (write requests, request body bytes) so far."""
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (name, labels), value in parse_samples(text).items():
        lab = dict(labels)
        if lab.get("verb", "").upper() not in WRITE_VERBS:
            continue
        if name == "apiserver_request_total":
            out[lab.get("resource", "?")][0] += value
        elif name == "apiserver_request_body_size_bytes_sum":
            out[lab.get("resource", "?")][1] += value
    return {k: (v[0], v[1]) for k, v in out.items()}


def watch_events_by_resource(text: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for (name, labels), value in parse_samples(text).items():
        if name == "apiserver_watch_events_total":
            out[dict(labels).get("resource", "?")] += value
    return dict(out)


def storage_bytes(text: str) -> float | None:
    for (name, _), value in parse_samples(text).items():
        if name in ("apiserver_storage_size_bytes", "apiserver_storage_db_total_size_in_bytes"):
            return value
    return None


ETCD_SERIES = {
    "etcd_mvcc_db_total_size_in_bytes": "total",
    "etcd_mvcc_db_total_size_in_use_in_bytes": "in_use",
    "etcd_debugging_mvcc_current_revision": "revision",
    "etcd_debugging_mvcc_compact_revision": "compacted",
}


def process_argv(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def etcd_metrics_url(argv: list[str]) -> str:
    """etcd's /metrics from its command line (kwokctl passes --listen-client-urls)."""
    for i, arg in enumerate(argv):
        for flag in ("--listen-client-urls", "--advertise-client-urls"):
            if arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            elif arg == flag and i + 1 < len(argv):
                value = argv[i + 1]
            else:
                continue
            url = value.split(",")[0].replace("0.0.0.0", "127.0.0.1")
            return url.rstrip("/") + "/metrics"
    raise LookupError("no client URL in etcd's command line")


def etcd_sizes(text: str) -> dict[str, float]:
    """The DB file's size, the part of it in use, the current and compacted revisions."""
    out = {}
    for (name, _), value in parse_samples(text).items():
        if name in ETCD_SERIES:
            out[ETCD_SERIES[name]] = value
    return out


async def etcd_sampler(url: str, every_s: float, out: list[dict[str, float]]) -> None:
    """Whether the DB levels off once the apiserver compacts (every 5 minutes by default):
    the file does not shrink without a defrag, but pages freed by a compaction are reused."""
    async with aiohttp.ClientSession() as s:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with s.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                    out.append({"t": time.monotonic()} | etcd_sizes(await r.text()))
            await asyncio.sleep(every_s)


def etcd_db_file(cluster: Devcluster) -> int | None:
    base = cluster.kwok_workdir / "clusters" / cluster.name
    for db in base.rglob("member/snap/db"):
        return db.stat().st_size
    return None


# --- the gateways --------------------------------------------------------------------


def _healthy(lease: LeaseRenewer) -> Callable[[], bool]:
    return lambda: lease.healthy


class Gateways:
    """Every gateway's real monitor chain, its own credentials, one process."""

    def __init__(self, gws: list[hw.Gateway], wearables: list[hw.Wearable]) -> None:
        self.gws = gws
        self.wearables = wearables
        self.by_corridor: dict[int, list[hw.Gateway]] = defaultdict(list)
        for g in gws:
            self.by_corridor[g.corridor].append(g)
        self.registry = Registry()
        self.registry.replace_all(DeviceSpec(w.name, w.address) for w in wearables)
        self.monitors: dict[str, Monitor] = {}
        self.publishers: dict[str, Publisher] = {}
        self.leases: dict[str, LeaseRenewer] = {}
        self.metrics: dict[str, Metrics] = {}
        self.clients: dict[str, Any] = {}
        self.walk_origin = math.inf  # monotonic time the walk phase started
        self.adverts = 0
        self.rng = random.Random(7)
        self.write_fail = Counter[str]()

    async def start(self, admin: Any, core: Any, tokens: dict[str, str]) -> list[asyncio.Task[Any]]:
        from kubernetes.aio.client import CoordinationV1Api, CustomObjectsApi

        from tests.gateway_monitor.node_tokens import bearer_client

        tasks = []
        for g in self.gws:
            api_client = bearer_client(admin, tokens[g.name])
            self.clients[g.name] = api_client
            metrics = Metrics()
            lease = LeaseRenewer(CoordinationV1Api(api_client), g.name, GATEWAY_NAMESPACE)
            name = g.name

            def on_result(reason: Any, ok: bool, name: str = name) -> None:
                if not ok:
                    self.write_fail[name] += 1

            publisher = Publisher(
                CustomObjectsApi(api_client),
                g.name,
                PublishPlan(),
                backoff=backoff_delays(),
                on_result=on_result,
                liveness=_healthy(lease),
            )
            monitor = Monitor(
                g.name, Tracker(), self.registry, publisher, metrics, clock=time.monotonic
            )
            self.monitors[g.name], self.publishers[g.name] = monitor, publisher
            self.leases[g.name], self.metrics[g.name] = lease, metrics
            tasks.append(asyncio.create_task(lease.run()))
            tasks.append(asyncio.create_task(publisher.run()))
        tasks.append(asyncio.create_task(self.advertise()))
        tasks.append(asyncio.create_task(self.tick()))
        return tasks

    def position(self, w: hw.Wearable, now: float) -> float:
        return w.position(now - self.walk_origin)

    async def advertise(self, interval: float = 1.0, slots: int = 10) -> None:
        """Every wearable advertises once per ``interval``; each gateway in range hears
        it with LOSS and NOISE_DB of Gaussian noise. Done in ``slots`` batches."""
        groups = [self.wearables[i::slots] for i in range(slots)]
        mons = self.monitors
        gauss, rand = self.rng.gauss, self.rng.random
        k = 0
        next_at = time.monotonic()
        while True:
            now = time.monotonic()
            for w in groups[k % slots]:
                x = self.position(w, now)
                for g in self.by_corridor[w.corridor]:
                    d = abs(g.x - x)
                    if d > hw.RANGE or rand() < LOSS:
                        continue
                    rssi = round(hw.rssi_at(d) + gauss(0.0, NOISE_DB))
                    mons[g.name].on_advert(Advert(w.address, rssi, now))
                    self.adverts += 1
            k += 1
            next_at += interval / slots
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for m in self.monitors.values():
                m.tick()

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()


async def node_tokens(admin: Any, gws: list[hw.Gateway]) -> dict[str, str]:
    """One TokenRequest per gateway, bound to a monitor pod on its node (kubelet's
    projected token carries the node claim the same way)."""
    from kubernetes.aio.client import CoreV1Api

    from tests.gateway_monitor.node_tokens import (
        NAMESPACE as MON_NS,
    )
    from tests.gateway_monitor.node_tokens import (
        SERVICE_ACCOUNT,
        install_monitor_identity,
        monitor_pod,
        whoami,
    )

    await install_monitor_identity(admin)
    core: Any = CoreV1Api(admin)
    gate = asyncio.Semaphore(16)

    async def one(g: hw.Gateway) -> tuple[str, str]:
        async with gate:
            pod = await monitor_pod(core, g.name)
            review = await core.create_namespaced_service_account_token(
                SERVICE_ACCOUNT,
                MON_NS,
                {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {
                        "audiences": [],
                        "expirationSeconds": 7200,
                        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod},
                    },
                },
            )
            return g.name, str(review.status.token)

    tokens = dict(await asyncio.gather(*(one(g) for g in gws)))
    from tests.gateway_monitor.node_tokens import bearer_client

    probe = bearer_client(admin, tokens[gws[0].name])
    try:
        who = await whoami(probe)
    finally:
        await probe.close()
    log(f"gateway identity: {who['username']} {who['extra']}")
    return tokens


async def cross_writes(admin: Any, tokens: dict[str, str], gws: list[hw.Gateway]) -> dict[str, int]:
    """Gateway A writes B's report and renews B's Lease, 10 pairs: every one must be refused."""
    from kubernetes.aio.client import CoordinationV1Api, CustomObjectsApi
    from kubernetes.aio.client.exceptions import ApiException

    from tests.gateway_monitor.node_tokens import bearer_client

    rng = random.Random(3)
    out = Counter[str]()
    for _ in range(10):
        a, b = rng.sample(gws, 2)
        c = bearer_client(admin, tokens[a.name])
        coord: Any = CoordinationV1Api(c)
        custom: Any = CustomObjectsApi(c)
        try:
            try:
                await custom.patch_cluster_custom_object_status(
                    GROUP,
                    VERSION,
                    REPORT_PLURAL,
                    b.name,
                    report_body(b.name, {"hw-99999": (-40, time.time())}, time.time()),
                    field_manager=f"cloud4iot-gateway-monitor/{a.name}",
                    force=True,
                    _content_type=APPLY_PATCH,
                )
                out["report accepted"] += 1
            except ApiException as exc:
                out[f"report refused {exc.status}"] += 1
            try:
                lease = await coord.read_namespaced_lease(b.name, GATEWAY_NAMESPACE)
                body = lease_body(
                    b.name, GATEWAY_NAMESPACE, time.time(), 40, lease.metadata.resource_version
                )
                await coord.replace_namespaced_lease(b.name, GATEWAY_NAMESPACE, body)
                out["lease accepted"] += 1
            except ApiException as exc:
                out[f"lease refused {exc.status}"] += 1
        finally:
            await c.close()
    return dict(out)


# --- watches (what one watcher of each kind, e.g. the extender, receives) ----------------


class Watches:
    def __init__(self) -> None:
        self.events = Counter[str]()
        self.bytes = Counter[str]()
        self.nearest: dict[str, str] = {}
        self.nearest_at: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self.pods: dict[str, tuple[str, str]] = {}  # pod -> (deployment app, node)
        self.bound_at: dict[str, list[tuple[float, str]]] = defaultdict(list)  # app -> (t, node)

    async def run(self, api: Api, path: str, kind: str) -> None:
        rv = "0"
        while True:
            try:
                listed = await api.call("GET", path + "?resourceVersion=0")
                for obj in listed.get("items", []):
                    self.seen(kind, obj, 0)
                rv = listed["metadata"]["resourceVersion"]
                async for ev in api.watch(path, rv):
                    if ev.get("type") == "BOOKMARK":
                        continue
                    if ev.get("type") == "ERROR":
                        break
                    self.events[kind] += 1
                    self.bytes[kind] += len(orjson.dumps(ev["object"]))
                    self.seen(kind, ev["object"], time.monotonic())
            except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
                log(f"watch {kind} restarts: {type(exc).__name__}")
                await asyncio.sleep(1)

    def seen(self, kind: str, obj: dict[str, Any], t: float) -> None:
        if kind == "devices":
            name = obj["metadata"]["name"]
            node = ((obj.get("status") or {}).get("nearest") or {}).get("node")
            if node and self.nearest.get(name) != node:
                self.nearest[name] = node
                self.nearest_at[name].append((t, node))
        elif kind == "pods":
            app = (obj["metadata"].get("labels") or {}).get("app")
            node = obj.get("spec", {}).get("nodeName")
            name = obj["metadata"]["name"]
            fresh = not obj["metadata"].get("deletionTimestamp")
            if app and node and fresh and name not in self.pods:
                self.pods[name] = (app, node)
                self.bound_at[app].append((t, node))


def function(name: str, device: str) -> dict[str, Any]:
    from tests.rebalancer.rebalancer_e2e_helpers import function_deployment

    out: dict[str, Any] = function_deployment(name, "mhealth-consolidator", device)
    return out


def lags(
    moves: list[hw.Move], seen: dict[str, list[tuple[float, str]]], origin: float, end: float
) -> tuple[list[float], int]:
    """Seconds from each true move to the first later observation of the new node; and
    how many moves had none by ``end`` (counted only when the move was at least 60 s
    before the end)."""
    out, missing = [], 0
    for mv in moves:
        t = origin + mv.t
        if t > end:
            continue
        hit = next((at for at, node in seen.get(mv.device, []) if at >= t and node == mv.new), None)
        if hit is None:
            if t < end - 60:
                missing += 1
        else:
            out.append(hit - t)
    return out, missing


# --- the run -------------------------------------------------------------------------


async def snapshot(
    api: Api, cluster: Devcluster, pids: dict[str, int], watches: Watches, gates: Gateways
) -> dict[str, Any]:
    text = await api.text("/metrics")
    return {
        "t": time.monotonic(),
        "writes": writes_by_resource(text),
        "watch_total": watch_events_by_resource(text),
        "storage": storage_bytes(text),
        "etcd_file": etcd_db_file(cluster),
        "cpu": cpu_now(pids),
        "events": dict(watches.events),
        "event_bytes": dict(watches.bytes),
        "adverts": gates.adverts,
    }


def window(a: dict[str, Any], b: dict[str, Any], devices: int) -> dict[str, Any]:
    dt = b["t"] - a["t"]
    writes = {}
    for key in sorted(set(a["writes"]) | set(b["writes"])):
        n0, b0 = a["writes"].get(key, (0.0, 0.0))
        n1, b1 = b["writes"].get(key, (0.0, 0.0))
        if n1 - n0 > 0:
            writes[key] = {"req_s": (n1 - n0) / dt, "bytes_s": (b1 - b0) / dt}
    total = sum(v["req_s"] for v in writes.values())
    cpu = {k: (b["cpu"][k] - a["cpu"].get(k, 0.0)) / dt for k in b["cpu"]}
    ev = {k: (b["events"].get(k, 0) - a["events"].get(k, 0)) / dt for k in b["events"]}
    evb = {
        k: (b["event_bytes"].get(k, 0) - a["event_bytes"].get(k, 0)) / dt for k in b["event_bytes"]
    }
    wt = {
        k: (v - a["watch_total"].get(k, 0.0)) / dt
        for k, v in b["watch_total"].items()
        if v - a["watch_total"].get(k, 0.0) > 0
    }
    return {
        "seconds": dt,
        "writes": writes,
        "writes_per_s": total,
        "writes_per_device_per_min": total * 60 / devices,
        "storage": (a["storage"], b["storage"]),
        "etcd_file": (a["etcd_file"], b["etcd_file"]),
        "cpu_cores": cpu,
        "watch_events_per_s": ev,
        "watch_bytes_per_s": evb,
        "apiserver_watch_events_per_s": wt,
        "adverts_per_s": (b["adverts"] - a["adverts"]) / dt,
    }


async def filter_sampler(url: str, device: str, nodes: list[str], out: list[float]) -> None:
    pod = {
        "metadata": {
            "name": "probe",
            "namespace": NAMESPACE,
            "uid": "probe",
            "annotations": {
                "cloud4iot.io/function": "mhealth-consolidator",
                "cloud4iot.io/device": device,
            },
        },
        "spec": {"schedulerName": "cloud4iot-scheduler", "containers": [{"name": "c"}]},
    }
    body = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": nodes})
    async with aiohttp.ClientSession() as s:
        while True:
            t = time.perf_counter()
            with contextlib.suppress(aiohttp.ClientError):
                async with s.post(
                    url + "/filter", data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    await r.read()
                    if r.status == 200:
                        out.append(time.perf_counter() - t)
            await asyncio.sleep(0.5)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from kubernetes.aio.client import ApiClient, Configuration, CoreV1Api
    from kubernetes.aio.config import load_kube_config

    gws = hw.gateways(args.gateways, PER_CORRIDOR)
    wearables = hw.wearables(args.devices, gws, PER_CORRIDOR, 0.0, args.walk, seed=11)
    by_corridor: dict[int, list[hw.Gateway]] = defaultdict(list)
    for g in gws:
        by_corridor[g.corridor].append(g)
    moves = [m for w in wearables for m in hw.true_moves(w, by_corridor[w.corridor])]
    tmp = Path(tempfile.mkdtemp(prefix="hospital-bench-"))
    topo = tmp / "topology.yaml"
    topo.write_text(yaml.safe_dump(topology(gws)))
    cluster = Devcluster(args.name, topology=topo, scrape_interval_s=5.0, log=log)
    result: dict[str, Any] = {
        "gateways": len(gws),
        "devices": len(wearables),
        "walkers": sum(1 for w in wearables if w.legs),
        "moves_planned": len(moves),
        "load_before": os.getloadavg(),
    }
    started = time.monotonic()
    cluster.up()
    log(f"devcluster up in {time.monotonic() - started:.0f}s")
    config = type.__call__(Configuration)
    await load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig), client_configuration=config, persist_config=False
    )
    admin = ApiClient(config)
    gates = Gateways(gws, wearables)
    tasks: list[asyncio.Task[Any]] = []
    watches = Watches()
    filter_lat: list[float] = []
    try:
        async with Api(cluster.kubeconfig, 32) as api:
            with contextlib.suppress(RuntimeError):
                await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
            tokens = await node_tokens(admin, gws)
            t = time.monotonic()
            await gather_limited(
                32,
                [
                    api.call(
                        "POST",
                        DEVICES,
                        {
                            "apiVersion": f"{GROUP}/{VERSION}",
                            "kind": "Device",
                            "metadata": {"name": w.name},
                            "spec": {"address": w.address},
                        },
                        ok=(201, 409),
                    )
                    for w in wearables
                ],
            )
            log(f"{len(wearables)} Devices created in {time.monotonic() - t:.0f}s")
            deadline = time.monotonic() + 120
            while len((await api.call("GET", REPORTS))["items"]) < len(gws):
                if time.monotonic() > deadline:
                    raise TimeoutError("the extender did not create every GatewayReport")
                await asyncio.sleep(2)
            for kind, path in (
                ("devices", DEVICES),
                ("gatewayreports", REPORTS),
                ("leases", LEASES),
                ("pods", f"/api/v1/namespaces/{NAMESPACE}/pods"),
            ):
                tasks.append(asyncio.create_task(watches.run(api, path, kind)))
            tasks += await gates.start(admin, CoreV1Api(admin), tokens)
            t0 = time.monotonic()
            while len(watches.nearest) < len(wearables):
                if time.monotonic() - t0 > args.warmup:
                    break
                log(
                    f"warm-up: {len(watches.nearest)}/{len(wearables)} decided,"
                    f" {gates.adverts} adverts"
                )
                await asyncio.sleep(10)
            result["warmup_s"] = time.monotonic() - t0
            result["decided_after_warmup"] = len(watches.nearest)
            walkers = [w for w in wearables if w.legs]
            sample = random.Random(5).sample(walkers, min(args.functions, len(walkers)))
            for w in sample:
                await api.call(
                    "POST",
                    f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
                    function(f"fn-{w.name}", w.name),
                    ok=(201, 409),
                )
            log("functions created; 30 s to place them")
            await asyncio.sleep(30)  # the functions placed, the first report burst over
            pids = process_pids(cluster)
            etcd_series: list[dict[str, float]] = []
            if "etcd" in pids:
                tasks.append(
                    asyncio.create_task(
                        etcd_sampler(
                            etcd_metrics_url(process_argv(pids["etcd"])), 15.0, etcd_series
                        )
                    )
                )
            s0 = await snapshot(api, cluster, pids, watches, gates)
            log(f"at rest for {args.rest:.0f}s")
            profiling = None
            if args.apiserver_profile:
                # Go's CPU profile of kube-apiserver over the rest's first seconds: what a
                # report write costs it (go tool pprof -top -cum FILE).
                seconds = min(args.profile_seconds, args.rest)
                profiling = asyncio.create_task(
                    api.raw(f"/debug/pprof/profile?seconds={seconds:.0f}")
                )
            await asyncio.sleep(args.rest)
            s1 = await snapshot(api, cluster, pids, watches, gates)
            if profiling is not None:
                args.apiserver_profile.write_bytes(await profiling)
                result["apiserver_profile"] = str(args.apiserver_profile)
            gates.walk_origin = time.monotonic()
            nodes = (
                [g.name for g in gws]
                + [f"edge-{i:02d}" for i in range(10)]
                + [f"cloud-{i:02d}" for i in range(10)]
            )
            tasks.append(
                asyncio.create_task(
                    filter_sampler(cluster.extender_url, sample[0].name, nodes, filter_lat)
                )
            )
            log(f"walking for {args.walk:.0f}s")
            await asyncio.sleep(args.walk)
            s2 = await snapshot(api, cluster, pids, watches, gates)
            end = time.monotonic()
            await asyncio.sleep(30)  # let the last moves land before checking placement
            result["rest"] = window(s0, s1, len(wearables))
            result["etcd_series"] = [
                {k: (v - s0["t"] if k == "t" else v) for k, v in point.items()}
                for point in etcd_series
            ]
            result["walk"] = window(s1, s2, len(wearables))
            result["load_after"] = os.getloadavg()
            near_lag, near_missing = lags(moves, watches.nearest_at, gates.walk_origin, end)
            sampled = {w.name for w in sample}
            fn_seen = {app[3:]: v for app, v in watches.bound_at.items()}
            fn_lag, fn_missing = lags(
                [m for m in moves if m.device in sampled], fn_seen, gates.walk_origin, end
            )
            log("checks")
            result["nearest_lags"] = near_lag
            result["function_lags"] = fn_lag
            result["nearest_lag"] = summary(near_lag) | {"missing": near_missing}
            result["function_lag"] = summary(fn_lag) | {"missing": fn_missing}
            result["filter_ms"] = summary([x * 1000 for x in filter_lat])
            rules = load_policy(cluster.policy).policy.spec.nearest
            result["evidence_s"] = hw.evidence_time(rules.switch_cost_db_s, rules.deadband_db)
            # Checks.
            devices = (await api.call("GET", DEVICES))["items"]
            decided = sum(
                1 for d in devices if ((d.get("status") or {}).get("nearest") or {}).get("node")
            )
            now = time.monotonic()
            truth_ok = 0
            for w in wearables:
                true = hw.nearest(by_corridor[w.corridor], gates.position(w, now)).name
                truth_ok += watches.nearest.get(w.name) == true
            pods = (await api.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods"))["items"]
            placed = {}
            for p in pods:
                if p["metadata"].get("deletionTimestamp"):
                    continue
                placed[p["metadata"]["labels"]["app"][3:]] = p["spec"].get("nodeName")
            fn_ok = sum(1 for w in sample if placed.get(w.name) == watches.nearest.get(w.name))
            result["checks"] = {
                "decided": f"{decided}/{len(wearables)}",
                "nearest_is_true_nearest_at_end": f"{truth_ok}/{len(wearables)}",
                "functions_on_nearest": f"{fn_ok}/{len(sample)}",
                "cross_writes": await cross_writes(admin, tokens, gws),
                "gateway_write_failures": sum(gates.write_fail.values()),
                "lease_failures_now": sum(1 for r in gates.leases.values() if not r.healthy),
            }
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await gates.close()
        await admin.close()  # type: ignore[no-untyped-call]
        if not args.keep:
            cluster.down()
    return result


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": hw.percentile(values, 0.5),
        "p99": hw.percentile(values, 0.99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def report(r: dict[str, Any]) -> str:
    lines = [
        f"gateways {r['gateways']}, devices {r['devices']}, walkers {r['walkers']},"
        f" warm-up {r['warmup_s']:.0f}s ({r['decided_after_warmup']} decided),"
        f" load {r['load_before']} -> {r.get('load_after')}",
        "",
    ]
    lines += ["| | at rest | walking |", "|---|---:|---:|"]
    rest, walk = r["rest"], r["walk"]
    lines.append(f"| window, s | {rest['seconds']:.0f} | {walk['seconds']:.0f} |")
    lines.append(
        f"| adverts/s into the monitors | {rest['adverts_per_s']:.0f} |"
        f" {walk['adverts_per_s']:.0f} |"
    )
    lines.append(
        f"| apiserver writes/s, all | {rest['writes_per_s']:.1f} | {walk['writes_per_s']:.1f} |"
    )
    lines.append(
        f"| writes per device per minute | {rest['writes_per_device_per_min']:.3f} |"
        f" {walk['writes_per_device_per_min']:.3f} |"
    )
    for key in sorted(set(rest["writes"]) | set(walk["writes"])):
        a, b = rest["writes"].get(key, {}), walk["writes"].get(key, {})
        lines.append(
            f"| writes/s, bytes/s: {key} | {a.get('req_s', 0):.2f}, "
            f"{a.get('bytes_s', 0):.0f} | {b.get('req_s', 0):.2f}, "
            f"{b.get('bytes_s', 0):.0f} |"
        )
    for name in ("storage", "etcd_file"):
        lines.append(
            f"| etcd {name} bytes (start -> end) | {rest[name][0]} -> {rest[name][1]} |"
            f" {walk[name][0]} -> {walk[name][1]} |"
        )
    for proc in sorted(walk["cpu_cores"]):
        lines.append(
            f"| CPU cores: {proc} | {rest['cpu_cores'].get(proc, 0):.2f} |"
            f" {walk['cpu_cores'][proc]:.2f} |"
        )
    for kind in sorted(walk["watch_events_per_s"]):
        lines.append(
            f"| watch events/s per watcher (bytes/s): {kind} |"
            f" {rest['watch_events_per_s'].get(kind, 0):.1f}"
            f" ({rest['watch_bytes_per_s'].get(kind, 0):.0f}) |"
            f" {walk['watch_events_per_s'][kind]:.1f}"
            f" ({walk['watch_bytes_per_s'].get(kind, 0):.0f}) |"
        )
    for kind in sorted(walk["apiserver_watch_events_per_s"]):
        lines.append(
            f"| apiserver watch events/s, all watchers: {kind} |"
            f" {rest['apiserver_watch_events_per_s'].get(kind, 0):.1f} |"
            f" {walk['apiserver_watch_events_per_s'][kind]:.1f} |"
        )
    lines.append("")
    lines.append(f"move -> status.nearest: {r['nearest_lag']}")
    lines.append(f"move -> function's pod on the new gateway: {r['function_lag']}")
    lines.append(f"/filter ms under the walk: {r['filter_ms']}")
    lines.append(f"evidence rule's earliest switch for this walk: {r['evidence_s']:.2f}s")
    lines.append(f"checks: {r['checks']}")
    series = r.get("etcd_series") or []
    if series:
        lines += ["", "| s since rest began | etcd DB MB | in use MB | revision | compacted to |"]
        lines.append("|---:|---:|---:|---:|---:|")
        for point in series[:: max(1, len(series) // 40)]:
            lines.append(
                f"| {point['t']:.0f} | {point.get('total', 0) / 1e6:.1f} |"
                f" {point.get('in_use', 0) / 1e6:.1f} | {point.get('revision', 0):.0f} |"
                f" {point.get('compacted', 0):.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--gateways", type=int, default=200)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rest", type=float, default=180.0)
    parser.add_argument("--walk", type=float, default=420.0)
    parser.add_argument("--warmup", type=float, default=600.0, help="max s to wait for decisions")
    parser.add_argument("--functions", type=int, default=20)
    parser.add_argument("--name", default="hospital")
    parser.add_argument("--keep", action="store_true", help="leave the devcluster up")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--apiserver-profile", type=Path, help="write kube-apiserver's CPU profile at rest here"
    )
    parser.add_argument("--profile-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    print(report(result))


if __name__ == "__main__":
    main()
