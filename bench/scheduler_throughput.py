"""The real kube-scheduler's throughput on the devcluster, with our extender and without.

    python -m devcluster bench scheduler-throughput [--nodes 500 5000] [--pods N ...] [--repeat K]

For each node count, a devcluster of its own per run (real etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok nodes: 10% gateways, 30% edge, 60%
cloud; Prometheus; no rebalancer) is brought up once with our extender and once
with `--no-extender` (the same scheduler configuration without the extender, at
kube-scheduler's default sampling), alternated when --repeat > 1. Devices heard
by two gateways each are created and, with the extender, the nearest-gateway
decisions written before the clock starts. Then the pod mix (confidential with a
device, engine diagnostic intensive with a device, anonymiser, unmanaged; all
`schedulerName: cloud4iot-scheduler`) is created as fast as the apiserver takes
it (concurrent requests from one aiohttp client, no client rate limit) while a
watch notes when each pod is bound. pods/s = pods / (first create sent -> last
pod seen bound). Before and after, the scheduler's and the extender's /metrics
and each process's CPU time are read. Prints Markdown tables; never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench import sched_workload as w
from bench.extender_pair import profiling as py_spy
from bench.extender_pair import summarise_profile
from bench.kube_raw import Api, gather_limited
from cloud4iot.devices import rfc3339
from devcluster.cluster import DEFAULT_POLICY, Devcluster
from devcluster.schedconfig import REPO_ROOT

NAMESPACE = "bench"
DEVICES = "/apis/cloud4iot.io/v1alpha1/devices"
# Sightings stay valid for the whole run: gateway heartbeats (one apply per device
# per gateway every few seconds) are not simulated, they would load the apiserver
# the same in both modes and the bench's own process besides.
SIGHTING_MAX_AGE = "1h"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def default_pods(nodes: int) -> int:
    """1,000 pods at 500 nodes, 2,000 at 5,000 (as in the scale issue)."""
    return min(2000, max(1000, 2 * nodes // 5))


def bench_policy(path: Path, load_refresh: float | None = None) -> Path:
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["spec"]["staleData"]["sightingMaxAge"] = SIGHTING_MAX_AGE
    if load_refresh is not None:
        doc["spec"]["prometheus"]["refreshInterval"] = f"{load_refresh:g}s"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def fetch_text(url: str) -> str:
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # kwokctl's self-signed serving certificate
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, ssl=insecure if url.startswith("https") else False) as resp,
    ):
        resp.raise_for_status()
        return await resp.text()


def process_pids(cluster: Devcluster) -> dict[str, int]:
    pids_dir = cluster.kwok_workdir / "clusters" / cluster.name / "pids"
    pids = {}
    for f in pids_dir.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pids[f.stem] = int(f.read_text().strip())
    for name, component in cluster.state().components.items():
        if component.pid is not None:
            pids[name] = component.pid
    pids["bench client"] = os.getpid()
    return pids


def cpu_now(pids: dict[str, int]) -> dict[str, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {w.MACHINE: w.machine_busy_ticks(Path("/proc/stat").read_text()) / tick}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            out[name] = w.cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / tick
    return out


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process used between two cpu_now readings (both ends read)."""
    return {k: after[k] - before[k] for k in after if k in before}


async def wait_until(what: str, probe: Any, timeout_s: float, step: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(step)


async def prepare(api: Api, cluster: Devcluster, plans: list[w.DevicePlan], log: Any) -> None:
    """The namespace, the Devices and their sightings; with the extender, its caches
    and the nearest-gateway decisions settled, so none of it happens while timed."""
    await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})

    async def has_default_sa() -> bool:
        with contextlib.suppress(RuntimeError):
            await api.call("GET", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default")
            return True
        return False

    await wait_until("the bench namespace's default ServiceAccount", has_default_sa, 60)
    started = time.monotonic()
    await gather_limited(api.concurrency, [api.call("POST", DEVICES, p.manifest()) for p in plans])
    seen = rfc3339(time.time())
    await gather_limited(
        api.concurrency,
        [
            api.call(
                "PATCH",
                f"{DEVICES}/{p.name}/status",
                p.status(seen),
                content_type="application/merge-patch+json",
            )
            for p in plans
        ],
    )
    log(f"{len(plans)} Devices created and sighted in {time.monotonic() - started:.1f}s")
    if not cluster.with_extender:
        return
    metrics_url = cluster.extender_health_url + "/metrics"

    async def extender_has_everything() -> bool:
        samples = w.parse_samples(await fetch_text(metrics_url))
        devices = w.total(samples, "cloud4iot_extender_cached_objects", kind="device")
        return devices >= len(plans)

    await wait_until("the extender to cache every Device", extender_has_everything, 300)

    by_name = {p.name: p for p in plans}
    refreshed = time.monotonic()

    async def all_decided() -> bool:
        nonlocal refreshed
        listed = await api.call("GET", DEVICES)
        undecided = [
            d["metadata"]["name"]
            for d in listed["items"]
            if not ((d.get("status") or {}).get("nearest") or {}).get("node")
        ]
        if undecided and time.monotonic() - refreshed > 5:
            # The writer decides only on sightings fresher than the policy's
            # `nearest.freshness` (15 s); a gateway would have re-applied by now.
            refreshed, seen = time.monotonic(), rfc3339(time.time())
            await gather_limited(
                api.concurrency,
                [
                    api.call(
                        "PATCH",
                        f"{DEVICES}/{name}/status",
                        by_name[name].status(seen),
                        content_type="application/merge-patch+json",
                    )
                    for name in undecided
                    if name in by_name
                ],
            )
        return not undecided

    await wait_until("every Device's nearest gateway", all_decided, 600, step=2)
    log(f"extender caches filled, nearest gateways written ({time.monotonic() - started:.1f}s)")


NODE_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


async def node_health(api: Api) -> str:
    """How many nodes are not Ready, and how many carry the node lifecycle's taints:
    kwok plays every kubelet, and a saturated machine can leave some behind."""
    listed = await api.call("GET", "/api/v1/nodes")
    not_ready = tainted = 0
    for node in listed["items"]:
        conditions = (node.get("status") or {}).get("conditions") or []
        ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
        not_ready += ready != "True"
        taints = (node.get("spec") or {}).get("taints") or []
        tainted += any(t.get("key") in NODE_TAINTS for t in taints)
    return f"{not_ready} of {len(listed['items'])} nodes not Ready, {tainted} tainted not-ready/unreachable"


async def create_and_watch(
    api: Api,
    kubeconfig: Path,
    manifests: list[dict[str, Any]],
    args: argparse.Namespace,
    placed: dict[str, str],
) -> tuple[float, float, int, list[str]]:
    """Create every pod at once (another process) while this one watches them bound.

    (create s, first create -> last bound s, pods bound, notes); `placed` gets
    each bound pod's node.
    """
    pods_path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    listed = await api.call("GET", pods_path + "?limit=1")
    version = str(listed["metadata"]["resourceVersion"])
    bound: dict[str, float] = {}
    wanted = {m["metadata"]["name"] for m in manifests}
    done = asyncio.Event()
    notes: list[str] = []
    resumed = 0

    async def watcher() -> None:
        nonlocal version, resumed
        while True:
            try:
                async for event in api.watch(pods_path, version):
                    obj = event.get("object") or {}
                    meta = obj.get("metadata") or {}
                    version = str(meta.get("resourceVersion") or version)
                    name = str(meta.get("name"))
                    node = (obj.get("spec") or {}).get("nodeName")
                    if name in wanted and name not in bound and node:
                        bound[name] = time.monotonic()
                        placed[name] = str(node)
                        if len(bound) == len(wanted):
                            done.set()
                            return
            except (aiohttp.ClientError, RuntimeError) as err:
                notes.append(f"watch failed ({err}); resumed")
                await asyncio.sleep(0.2)
                continue
            # The apiserver ends a watch whose reader falls behind: resume where it was.
            resumed += 1

    watch_task = asyncio.create_task(watcher())
    await asyncio.sleep(0.5)  # the watch is established before the first create
    with tempfile.NamedTemporaryFile("w", suffix=".json") as pods_file:
        json.dump(manifests, pods_file)
        pods_file.flush()
        creator = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.kube_raw",
            str(kubeconfig),
            pods_file.name,
            NAMESPACE,
            str(args.concurrency),
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await creator.communicate()
    if creator.returncode != 0:
        watch_task.cancel()
        raise RuntimeError(f"creating the pods failed (exit {creator.returncode})")
    times = json.loads(out)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), args.timeout)
    watch_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await watch_task
    start, end = float(times["start"]), float(times["end"])
    last = max(bound.values(), default=start)
    early = sum(1 for at in bound.values() if at <= end)
    if resumed:
        notes.append(f"watch closed by the apiserver and resumed {resumed}x")
    notes.append(f"{early} pods bound when the last create was answered")
    return end - start, last - start, len(bound), notes


async def measure(
    cluster: Devcluster, run: w.Run, plans: list[w.DevicePlan], args: argparse.Namespace
) -> None:
    def log(msg: str) -> None:
        print(f"  [{run.nodes} nodes, {run.mode}, run {run.repeat}] {msg}", file=sys.stderr)

    manifests = w.pods(run.pods, [p.name for p in plans])
    async with Api(cluster.kubeconfig, args.concurrency) as api:
        await prepare(api, cluster, plans, log)
        pids = process_pids(cluster)
        rest_before, rest_from = cpu_now(pids), time.monotonic()
        await asyncio.sleep(args.settle)
        rest_after, run.rest_wall_s = cpu_now(pids), time.monotonic() - rest_from
        run.rest_cpu_s = cpu_used(rest_before, rest_after)
        health_before = await node_health(api)
        sched_before = w.parse_samples(await fetch_text(cluster.scheduler_metrics_url))
        ext_url = cluster.extender_health_url + "/metrics" if cluster.with_extender else None
        ext_before = w.parse_samples(await fetch_text(ext_url)) if ext_url else {}
        api_before = w.parse_samples(await api.text("/metrics"))
        cpu_before, cpu_from = cpu_now(pids), time.monotonic()
        placed: dict[str, str] = {}
        profiling = None
        if args.apiserver_profile:
            # Go's CPU profile of kube-apiserver over the timed part: where its extra
            # CPU per pod goes with our extender (go tool pprof -top FILE).
            profiling = asyncio.create_task(
                api.raw(f"/debug/pprof/profile?seconds={args.profile_seconds:.0f}")
            )
        mode = run.mode.replace(" ", "-")  # "no extender": no space in a file name
        spying: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        raw = None
        if args.extender_profile and "extender" in pids:
            # py-spy on our extender over the timed part: where its CPU per pod goes.
            raw = args.extender_profile / f"extender-{run.nodes}-{mode}-{run.repeat}.txt"
            raw.parent.mkdir(parents=True, exist_ok=True)
            spying = py_spy(pids["extender"], raw, args.profile_rate)
        with spying:
            run.create_s, run.total_s, run.bound, notes = await create_and_watch(
                api, cluster.kubeconfig, manifests, args, placed
            )
        if raw is not None:
            table, samples = summarise_profile(raw)
            raw.with_suffix(".md").write_text(table + "\n")
            notes.append(f"extender py-spy profile ({samples} samples holding the GIL): {raw}")
        if profiling is not None:
            out = args.apiserver_profile / f"apiserver-{run.nodes}-{mode}-{run.repeat}.pprof"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(await profiling)
            notes.append(f"apiserver CPU profile ({args.profile_seconds:.0f} s): {out}")
        run.notes += notes
        run.notes.append(f"before: {health_before}; after: {await node_health(api)}")
        checked = w.placement_check(manifests, plans, placed)
        run.notes.append(
            "placed where the policy wants them: "
            + ", ".join(f"{k} {ok}/{n}" for k, (ok, n) in sorted(checked.items()))
        )
        cpu_after, run.cpu_wall_s = cpu_now(pids), time.monotonic() - cpu_from
        sched_after = w.parse_samples(await fetch_text(cluster.scheduler_metrics_url))
        ext_after = w.parse_samples(await fetch_text(ext_url)) if ext_url else {}
        api_after = w.parse_samples(await api.text("/metrics"))
    if ext_url:
        run.notes.append(w.admission_note(ext_before, ext_after, api_before, api_after))
        # How long each create waited for our /admit, as the apiserver timed it.
        hook = w.histo(
            api_before,
            api_after,
            "apiserver_admission_webhook_admission_duration_seconds",
            type="admit",
        )
        if hook.count:
            run.notes.append(
                f"the apiserver waited for /admit {hook.mean_ms():.1f} ms on average"
                f" ({hook.count:.0f} calls, {hook.seconds:.1f} s in all)"
            )
    run.cpu_s = cpu_used(cpu_before, cpu_after)
    if ext_url:
        name = "cloud4iot_extender_request_duration_seconds"
        run.filter = w.histo(ext_before, ext_after, name, verb="filter")
        run.prioritize = w.histo(ext_before, ext_after, name, verb="prioritize")
    profile = {"profile": w.SCHEDULER_NAME}
    run.attempt = w.histo(
        sched_before, sched_after, "scheduler_scheduling_attempt_duration_seconds", **profile
    )
    for result in w.label_values(
        sched_after, "scheduler_scheduling_attempt_duration_seconds_count", "result"
    ):
        run.attempts_by_result[result] = w.delta(
            sched_before,
            sched_after,
            "scheduler_scheduling_attempt_duration_seconds_count",
            result=result,
            **profile,
        )
    run.algorithm = w.histo(
        sched_before, sched_after, "scheduler_scheduling_algorithm_duration_seconds"
    )
    points = "scheduler_framework_extension_point_duration_seconds"
    for point in w.label_values(sched_after, f"{points}_count", "extension_point"):
        run.extension_points[point] = w.histo(
            sched_before, sched_after, points, extension_point=point, **profile
        )
    limiter = "rest_client_rate_limiter_duration_seconds"
    for verb in w.label_values(sched_after, f"{limiter}_count", "verb"):
        run.limiter[verb] = w.histo(sched_before, sched_after, limiter, verb=verb)
    if run.bound < run.pods:
        run.notes.append(f"only {run.bound} of {run.pods} pods bound within {args.timeout:.0f}s")
    log(
        f"{run.bound}/{run.pods} bound in {run.total_s:.1f}s ({run.pods_per_s:.1f} pods/s);"
        f" created in {run.create_s:.1f}s; attempts {run.attempts_by_result}"
    )


def one_run(
    nodes: int, pods: int, extender: bool, repeat: int, workdir: Path, args: argparse.Namespace
) -> w.Run:
    topo = workdir / f"topology-{nodes}.yaml"
    entries = w.topology(nodes)
    topo.write_text(yaml.safe_dump({"nodes": entries}, sort_keys=False))
    plans = w.devices(w.device_pods(pods), w.gateways(entries))
    cluster = Devcluster(
        f"{args.name}-{nodes}-{'ext' if extender else 'none'}",
        topology=topo,
        policy=bench_policy(workdir / "policy.yaml", args.load_refresh),
        with_extender=extender,
        with_rebalancer=False,
        follow_pods=False,
        scrape_interval_s=args.scrape_interval,
        tier_affinity=not args.no_tier_affinity,
        narrowing=not args.no_narrowing,
        candidates=args.candidates,
    )
    run = w.Run(nodes, pods, extender, repeat, 0.0, 0.0, 0)
    up = time.monotonic()
    cluster.up()
    try:
        run.notes.append(f"devcluster up in {time.monotonic() - up:.0f}s")
        if extender and args.no_tier_affinity:
            run.notes.append("tier-affinity admission policy not installed")
        if extender:
            run.notes.append(
                "admission narrowing off: our profile scores every node"
                if args.no_narrowing
                else "admission narrowing on: our profile samples"
                + (f", pins of {args.candidates} nodes" if args.candidates is not None else "")
            )
        rendered = yaml.safe_load((cluster.state_dir / "kube-scheduler-config.yaml").read_text())
        limits = rendered.get("clientConnection") or {}
        run.notes.append(f"scheduler client qps {limits.get('qps')} burst {limits.get('burst')}")
        asyncio.run(measure(cluster, run, plans, args))
        with contextlib.suppress(Exception):
            run.notes.append(scrape_note(cluster))
    finally:
        cluster.down()
    return run


def scrape_note(cluster: Devcluster) -> str:
    """How long Prometheus took to scrape the load simulator, the last time."""
    import urllib.parse
    import urllib.request

    def q(expr: str) -> float:
        url = f"{cluster.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as resp:
            return float(json.load(resp)["data"]["result"][0]["value"][1])

    duration = q('scrape_duration_seconds{job="loadsim"}')
    samples = q('scrape_samples_scraped{job="loadsim"}')
    return f"loadsim scrape {duration:.2f}s for {samples:.0f} samples"


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[500, 5000])
    p.add_argument(
        "--pods",
        type=int,
        nargs="+",
        help="pods per node count, in the same order (default: 1,000 at 500 nodes,"
        " 2,000 at 5,000; 2 per 5 nodes between)",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per mode, alternated")
    p.add_argument(
        "--mode",
        choices=("both", "extender", "baseline"),
        default="both",
        help="with our extender, without any (baseline), or both (default)",
    )
    p.add_argument("--name", default="bench-sched", help="devcluster name prefix")
    p.add_argument(
        "--no-tier-affinity",
        action="store_true",
        help="with our extender, leave out the tier-affinity admission policy (every node"
        " then reaches the extender; pod creation skips its CEL)",
    )
    p.add_argument(
        "--no-narrowing",
        action="store_true",
        help="with our extender, leave out the admission-narrowing webhook (our profile then"
        " scores every node, as before it existed)",
    )
    p.add_argument(
        "--candidates",
        type=int,
        help="nodes a narrowed pod is pinned to (the extender's --candidates; default its own)",
    )
    p.add_argument(
        "--scrape-interval",
        type=float,
        default=15.0,
        help="Prometheus scrape interval in seconds (the load simulator's page at 5,000"
        " nodes takes ~1 s to render; the policy's [30s] rate window needs two scrapes)",
    )
    p.add_argument(
        "--load-refresh",
        type=float,
        help="the policy's prometheus.refreshInterval in seconds (default: the shipped"
        " policy's 5 s; each refresh evaluates a rate() over every node's CPU series)",
    )
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight to create")
    p.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="quiet seconds before the clock, over which each process's CPU at rest is read"
        " (15: a scrape and three of the extender's load refreshes)",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for all pods to bind")
    p.add_argument("--json", type=Path, help="also write every run's numbers here")
    p.add_argument(
        "--apiserver-profile",
        type=Path,
        metavar="DIR",
        help="save kube-apiserver's Go CPU profile of the timed part of each run here",
    )
    p.add_argument(
        "--profile-seconds",
        type=float,
        default=8.0,
        help="length of that profile, from the first create (keep it under the run's length)",
    )
    p.add_argument(
        "--extender-profile",
        type=Path,
        metavar="DIR",
        help="save a py-spy profile of our extender over the timed part of each run here"
        " (raw folded stacks, and a summary .md beside it)",
    )
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument(
        "--report", type=Path, help="print the tables of an earlier --json file and exit"
    )
    args = p.parse_args(argv)
    if args.report:
        earlier = w.runs_from_json(json.loads(args.report.read_text()))
        print(w.report(earlier, f"kube-scheduler throughput, from {args.report}"))
        return
    pods = args.pods or [default_pods(n) for n in args.nodes]
    if len(pods) != len(args.nodes):
        p.error("--pods needs one count per --nodes value")
    runs: list[w.Run] = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
        for nodes, count in zip(args.nodes, pods, strict=True):
            for k in range(args.repeat):
                # Alternate which mode goes first, so drift (a warming machine,
                # another tenant) does not always favour the same one.
                order = (True, False) if k % 2 == 0 else (False, True)
                for extender in order:
                    if args.mode != "both" and extender != (args.mode == "extender"):
                        continue
                    runs.append(one_run(nodes, count, extender, k + 1, Path(tmp), args))
                    if args.json:  # after every run: a late failure keeps the others
                        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    command = "python -m devcluster bench scheduler-throughput " + " ".join(argv or [])
    print(w.report(runs, f"kube-scheduler throughput, {started}; `{command.strip()}`"))


if __name__ == "__main__":
    main(sys.argv[1:])
