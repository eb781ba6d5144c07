"""How long a pod created right after a kube-apiserver outage waits to be bound.

    .venv/bin/python -m devcluster bench apiserver-outage --outages 3 15 40 3@5 40+restart

On a devcluster of its own (kube-scheduler and kube-controller-manager at klog -v 4),
each outage kills kube-apiserver (SIGKILL, like a crash), keeps it down for the given
seconds (the supervisor is told it is stopped on purpose), starts it again with its
own command line, and as soon as it answers creates, at the same moment, a bare Pod
and a one-replica Deployment, both for our scheduler (class anonymiser). Printed:

* serving: from the start of the new apiserver to the first accepted create;
* pod->bound: the bare Pod, from its create to its binding (kube-scheduler only);
* deploy->rs, rs->pod, pod->bound: the Deployment's chain (kube-controller-manager's
  Deployment and ReplicaSet controllers, then kube-scheduler);
* extender: from the first accepted create until the extender's /readyz no longer
  lists its Kubernetes watches as degraded.

Times are seen by polling the apiserver every 0.1 s (wall clock, so they line up with
the components' logs). `L@G` runs an outage of L seconds G seconds after the previous
run ended (default gap 130 s: client-go's reflectors reset their retry backoff only
after 2 minutes); `L+restart` restarts kube-scheduler as soon as the apiserver
serves (the admin's mitigation). `--keep-logs` leaves the logs under the cluster's
state directory. Printed, never asserted; the analysis is in RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client

from devcluster import kube
from devcluster.cluster import Devcluster
from devcluster.processes import is_alive
from devcluster.supervisor import Book, Supervisor, locked

T = TypeVar("T")
NAMESPACE = "outage"
SCHEDULER, FUNCTION = "cloud4iot-scheduler", "cloud4iot.io/function"
DEFAULT_GAP_S = 130.0


@dataclass
class Outage:
    down_s: float  # how long kube-apiserver stays dead
    gap_s: float  # wait after the previous run before killing it
    restart_scheduler: bool = False  # the admin's mitigation, once the apiserver serves


@dataclass
class Result:
    outage_s: float
    restart_scheduler: bool
    killed_at: float  # wall clock
    serving_s: float  # new apiserver started -> first create accepted
    pod_bound_s: float  # bare pod created -> bound
    deploy_rs_s: float  # Deployment created -> its ReplicaSet seen
    rs_pod_s: float  # ReplicaSet seen -> its pod seen
    deploy_pod_bound_s: float  # the Deployment's pod seen -> bound
    deploy_total_s: float  # Deployment created -> its pod bound
    extender_synced_s: float  # first create accepted -> the extender's watches healthy


def parse_outage(text: str) -> Outage:
    """`L`, `L@G` or `L+restart@G` (see the module's doc)."""
    spec, _, gap = text.partition("@")
    down, plus, what = spec.partition("+")
    if plus and what != "restart":
        raise argparse.ArgumentTypeError(f"{text}: only +restart may follow the outage")
    return Outage(float(down), float(gap) if gap else DEFAULT_GAP_S, bool(plus))


def until(probe: Callable[[], T | None], timeout: float = 300.0, step: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(Exception):  # the apiserver may be down: that is the point
            value = probe()
            if value:
                return value
        time.sleep(step)
    raise TimeoutError("the devcluster did not reach the expected state")


def pod_template(name: str) -> dict[str, Any]:
    """A stand-in function of class anonymiser for our scheduler (kwok pulls no image)."""
    return {
        "metadata": {"labels": {"app": name}, "annotations": {FUNCTION: "anonymiser"}},
        "spec": {
            "schedulerName": SCHEDULER,
            "containers": [
                {
                    "name": "function",
                    "image": "registry.invalid/cloud4iot/function:bench",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }
            ],
        },
    }


def bare_pod(name: str) -> client.V1Pod:
    template = pod_template(name)
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **template["metadata"]},
        "spec": template["spec"],
    }
    return kube.model(client.V1Pod, manifest)


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name),
        },
    }


def extender_watches_ok(cluster: Devcluster) -> bool:
    """The extender's Kubernetes source is healthy: /readyz lists no degraded `kubernetes`."""
    with urllib.request.urlopen(cluster.extender_health_url + "/readyz", timeout=2) as resp:
        body = json.loads(resp.read())
    return not any(str(d).startswith("kubernetes") for d in body.get("degraded", []))


def kill_apiserver(cluster: Devcluster, outage: Outage) -> tuple[float, float]:
    """Kill kube-apiserver, keep it down, start it again; (killed, restarted) wall times."""
    cluster_dir = cluster.kwok_workdir / "clusters" / cluster.name
    recipe = Book.load(cluster.state_dir / "supervisor.json").recipes["kube-apiserver"]
    supervisor = Supervisor(cluster.state_dir, cluster_dir)
    assert recipe.pid_file is not None
    with locked(cluster.state_dir):
        pid = supervisor.pid_of(recipe)
        assert pid is not None
        Path(recipe.pid_file).write_text("")  # no pid: the supervisor leaves it down
        os.kill(pid, signal.SIGKILL)
    killed = time.time()
    until(lambda: not is_alive(pid), 30)
    time.sleep(max(0.0, killed + outage.down_s - time.time()))
    with locked(cluster.state_dir):
        supervisor.start(recipe)
    return killed, time.time()


def one_run(cluster: Devcluster, api: client.ApiClient, outage: Outage, index: int) -> Result:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    until(lambda: all(cluster.status().values()), 120, 1.0)
    killed, restarted = kill_apiserver(cluster, outage)
    pod_name, deploy_name = f"bare-{index}", f"deploy-{index}"

    def create_both() -> float:
        core.create_namespaced_pod(NAMESPACE, bare_pod(pod_name))
        return time.time()

    created = until(create_both, 120, 0.05)
    if outage.restart_scheduler:
        cluster.restart("kube-scheduler")
    kube.create_deployment(api, NAMESPACE, deployment(deploy_name))
    deploy_created = time.time()
    seen: dict[str, float] = {}
    while len(seen) < 5:
        now = time.time()
        with suppress(Exception):
            if "extender" not in seen and extender_watches_ok(cluster):
                seen["extender"] = now
        with suppress(Exception):
            pods = core.list_namespaced_pod(NAMESPACE).items
            for p in pods:
                name = p.metadata.name if p.metadata else None
                is_deploy = bool(name and name.startswith(deploy_name + "-"))
                if is_deploy:
                    seen.setdefault("deploy_pod", now)
                if kube.is_bound(p):
                    if name == pod_name:
                        seen.setdefault("bare_bound", now)
                    elif is_deploy:
                        seen.setdefault("deploy_bound", now)
            rss = apps.list_namespaced_replica_set(NAMESPACE, label_selector=f"app={deploy_name}")
            if rss.items:
                seen.setdefault("rs", now)
        if now - deploy_created > 300:
            raise TimeoutError(f"run {index}: only {sorted(seen)} after 300 s")
        time.sleep(0.1)
    return Result(
        outage_s=outage.down_s,
        restart_scheduler=outage.restart_scheduler,
        killed_at=killed,
        serving_s=round(created - restarted, 1),
        pod_bound_s=round(seen["bare_bound"] - created, 1),
        deploy_rs_s=round(seen["rs"] - deploy_created, 1),
        rs_pod_s=round(seen["deploy_pod"] - seen["rs"], 1),
        deploy_pod_bound_s=round(seen["deploy_bound"] - seen["deploy_pod"], 1),
        deploy_total_s=round(seen["deploy_bound"] - deploy_created, 1),
        extender_synced_s=round(seen["extender"] - created, 1),
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--outages", nargs="+", type=parse_outage, default=[parse_outage("3")])
    p.add_argument("--name", default="bench-outage")
    p.add_argument("--verbosity", type=int, default=4)
    p.add_argument("--keep-logs", action="store_true")
    args = p.parse_args(argv)
    cluster = Devcluster(args.name, verbosity=args.verbosity)
    cluster.up()
    results: list[Result] = []
    try:
        with kube.api_client(Path(cluster.kubeconfig)) as api:
            kube.create_namespace(api, NAMESPACE)
            for index, outage in enumerate(args.outages):
                if index:
                    time.sleep(outage.gap_s)
                result = one_run(cluster, api, outage, index)
                print(json.dumps(asdict(result)), flush=True)
                results.append(result)
    finally:
        cluster.down(keep_logs=args.keep_logs)
        if args.keep_logs:
            print(f"logs kept in {cluster.state_dir / 'logs'}", file=sys.stderr)
    print(
        f"{'outage':>11} {'serving':>8} {'pod->bound':>11} {'deploy->rs':>11} {'rs->pod':>8}"
        f" {'pod->bound':>11} {'deploy total':>13} {'extender':>9}"
    )
    for r in results:
        label = f"{r.outage_s:.0f}s" + ("+restart" if r.restart_scheduler else "")
        print(
            f"{label:>11} {r.serving_s:>7.1f}s {r.pod_bound_s:>10.1f}s"
            f" {r.deploy_rs_s:>10.1f}s {r.rs_pod_s:>7.1f}s {r.deploy_pod_bound_s:>10.1f}s"
            f" {r.deploy_total_s:>12.1f}s {r.extender_synced_s:>8.1f}s"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
