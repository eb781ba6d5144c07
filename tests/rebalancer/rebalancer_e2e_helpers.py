"""Helpers for the rebalancer's end-to-end tests: a fast policy, gateways that keep
their sightings fresh, a sampler of Ready replicas, Events, and extra rebalancers."""

from __future__ import annotations

import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml
from kubernetes import client, watch

from devcluster import kube
from devcluster.cluster import Devcluster
from devcluster.processes import free_port, start_detached, stop_processes, wait_http_ok
from tests.cluster_world import until as waiting_until
from tests.state.cluster_helpers import sight

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# Production timings are minutes; these keep each scenario to seconds while every
# rule still acts (settle, dwell, cooldown, away time, sighting age).
FAST: dict[str, Any] = {
    "rebalance": {
        "interval": "10s",
        "dwell": "1s",
        "cooldown": "12s",
        "deviceAwayAfter": "6s",
        "maxMovesPerMinute": 30,
        "maxMovesPerNodePerMinute": 10,
    },
    "nearest": {"settle": "3s"},
    "staleData": {"sightingMaxAge": "6s"},
}
PARK_CLASS = "parked-reader"


def fast_policy(text: str) -> str:
    doc = yaml.safe_load(text)
    spec = doc["spec"]
    for section, values in FAST.items():
        spec.setdefault(section, {}).update(values)
    parked = dict(spec["classes"]["mhealth-consolidator"])
    parked["whenDeviceAway"] = "park"
    spec["classes"][PARK_CLASS] = parked
    doc["metadata"]["name"] = "e2e-fast"
    return yaml.safe_dump(doc, sort_keys=False)


def policy_version(url: str) -> str:
    with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
        return str(orjson.loads(resp.read()).get("policy", ""))


def until(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Wait as tests/cluster_world.py's `until` does; only an apiserver error is retried."""
    return waiting_until(what, probe, timeout, interval=0.2, tolerate=(client.ApiException,))


@contextmanager
def fast_rebalancing(cluster: Devcluster) -> Iterator[None]:
    original = cluster.policy_file.read_text()
    cluster.write_policy(fast_policy(original))
    try:
        for url in (cluster.extender_url, cluster.rebalancer_url):
            until("the fast policy", lambda u=url: policy_version(u).startswith("e2e-fast@"), 30)
        yield
    finally:
        cluster.write_policy(original)


class Radio:
    """Gateways that re-apply their sighting of each device every second, as a monitor
    does while it hears a device; `set(device, gateway, None)` stops hearing it."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.levels: dict[tuple[str, str], float | None] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def set(self, device: str, gateway: str, rssi: float | None) -> None:
        with self._lock:
            self.levels[(device, gateway)] = rssi
        sight(self.api, device, gateway, rssi)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                heard = [(k, v) for k, v in self.levels.items() if v is not None]
            for (device, gateway), rssi in heard:
                with suppress(Exception):
                    sight(self.api, device, gateway, rssi)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class ReadySampler:
    """Ready, undeleted pods of a selector after every change, in the apiserver's order.

    A watch delivers changes in resourceVersion order, so the counts are exact: a
    make-before-break move goes 1 -> 2 -> 1, a break-before-make one passes through 0.
    """

    def __init__(self, api: client.ApiClient, namespace: str, selector: str) -> None:
        self.api, self.namespace, self.selector = api, namespace, selector
        self.samples: list[int] = []
        self._watch = watch.Watch()
        self._pods: dict[str, bool] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        core = client.CoreV1Api(self.api)
        with suppress(Exception):
            for event in self._watch.stream(
                core.list_namespaced_pod,
                self.namespace,
                label_selector=self.selector,
                timeout_seconds=300,
            ):
                pod = event["object"]
                alive = event["type"] != "DELETED" and is_ready(pod) and not kube.is_deleted(pod)
                self._pods[pod.metadata.name] = alive
                self.samples.append(sum(self._pods.values()))

    def stop(self) -> list[int]:
        self._watch.stop()
        self._thread.join(timeout=10)
        return self.samples


def is_ready(pod: client.V1Pod) -> bool:
    conditions = (pod.status.conditions or []) if pod.status else []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def running_pods(api: client.ApiClient, namespace: str, selector: str) -> list[client.V1Pod]:
    return [
        p
        for p in kube.pods_of(api, namespace, selector)
        if kube.is_bound(p) and not kube.is_deleted(p)
    ]


def only_pod(api: client.ApiClient, namespace: str, selector: str) -> client.V1Pod | None:
    pods = running_pods(api, namespace, selector)
    return pods[0] if len(pods) == 1 and is_ready(pods[0]) else None


def rebalancer_events(api: client.ApiClient, namespace: str, kind: str, name: str) -> list[Any]:
    events = (
        client.CoreV1Api(api)
        .list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={kind}"
        )
        .items
    )
    return [
        e for e in events if e.source is not None and e.source.component == "cloud4iot-rebalancer"
    ]


def function_deployment(
    name: str,
    function: str,
    device: str,
    *,
    max_surge: int | str | None = None,
    max_unavailable: int | str | None = None,
    cpu: str = "50m",
    gate: str | None = None,
) -> dict[str, Any]:
    """With `max_surge`, a RollingUpdate strategy: make-before-break (maxUnavailable 0)
    when it surges, else maxUnavailable 1 (the apiserver refuses both 0)."""
    if max_unavailable is None:
        max_unavailable = 1 if max_surge in (0, "0%") else 0
    spec: dict[str, Any] = {
        "replicas": 1,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {
                "labels": {"app": name},
                "annotations": {"cloud4iot.io/function": function, "cloud4iot.io/device": device},
            },
            "spec": {
                "schedulerName": "cloud4iot-scheduler",
                "containers": [
                    {
                        "name": "function",
                        "image": "registry.invalid/cloud4iot/function:test",
                        "resources": {"requests": {"cpu": cpu, "memory": "32Mi"}},
                    }
                ],
            },
        },
    }
    if gate is not None:  # held Pending as a queue (Kueue, say) holds a pod, pin and all
        spec["template"]["spec"]["schedulingGates"] = [{"name": gate}]
    if max_surge is not None:
        spec["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": max_unavailable},
        }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


def pdb(name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
    }


@contextmanager
def extra_rebalancer(cluster: Devcluster, *args: str, name: str = "rebalancer-b") -> Iterator[str]:
    """Another cloud4iot-rebalancer process of this cluster; yields its URL."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "rebalancer",
        "--policy",
        str(cluster.policy_file),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--prometheus-url",
        cluster.prometheus_url,
        *args,
    ]
    log = cluster.state_dir / "logs" / f"{name}.log"
    pid = start_detached(argv, log, cluster.process_env(), cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(url + "/readyz", 60, pid=pid, log=log)
        yield url
    finally:
        stop_processes([pid])


def readyz(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
        doc: dict[str, Any] = orjson.loads(resp.read())
        return doc
