"""Helpers shared by the devcluster's fault and end-to-end tests (tests/faults,
tests/explain): waiting on a condition while the apiserver may be down, reading a
component's /metrics, where a namespace's pods run and each device's nearest gateway
(a world's snapshot), gateway monitors as host processes, and a gateway node made
NotReady."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from kubernetes import client

from devcluster import kube
from devcluster.cluster import Devcluster
from tests.state.cluster_helpers import device_status

T = TypeVar("T")
UNREACHABLE = "node.kubernetes.io/unreachable"


def until(
    what: str,
    probe: Callable[[], T | None],
    timeout: float = 120.0,
    interval: float = 0.25,
    tolerate: tuple[type[Exception], ...] = (Exception,),
) -> T:
    """`probe()`'s first truthy value; an exception of `tolerate` counts as not yet
    (by default any: the apiserver may be down, and in a fault test that is the point)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except tolerate:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def scrape(url: str, prefix: str, insecure: bool = False) -> dict[str, float]:
    """The samples of `url`'s Prometheus text whose name starts with prefix (the
    prefix cut off the keys)."""
    context = None
    if insecure:  # kube-scheduler's self-signed /metrics
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, timeout=5, context=context) as resp:
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            key, _, value = line.rpartition(" ")
            samples[key[len(prefix) :]] = float(value)
    return samples


def placement(api: client.ApiClient, namespace: str) -> dict[str, tuple[str, str]]:
    """The namespace's running pods: name -> (uid, node); bound and not being deleted."""
    items = client.CoreV1Api(api).list_namespaced_pod(namespace).items
    return {
        p.metadata.name: (p.metadata.uid, kube.node_of(p))
        for p in items
        if kube.is_bound(p) and not kube.is_deleted(p)
    }


def nearest_of(api: client.ApiClient, device: str) -> str | None:
    """The gateway the Device's nearest decision names (None: none yet)."""
    node = (device_status(api, device).get("nearest") or {}).get("node")
    return str(node) if node else None


@dataclass
class Monitors:
    """Gateway monitors as host processes (`cloud4iot-gateway-monitor --replay`), with
    the cluster's kubeconfig, as the demo runs them; a log per node under `logs`."""

    cluster: Devcluster
    traces: dict[str, Path]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, node: str, *extra: str) -> None:
        exe = Path(sys.executable).with_name("cloud4iot-gateway-monitor")
        argv = [
            str(exe),
            "--node",
            node,
            "--replay",
            str(self.traces[node]),
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *extra,
        ]
        with open(self.logs / f"monitor-{node}.log", "ab") as log:
            self.procs[node] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, node: str) -> None:
        """SIGKILL: no departure written, no Lease handed back."""
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def node_ready(api: client.ApiClient, node: str) -> str:
    """The node's Ready condition status: True, False or Unknown."""
    obj = client.CoreV1Api(api).read_node(node)
    return next((c.status for c in obj.status.conditions or [] if c.type == "Ready"), "Unknown")


def node_taints(api: client.ApiClient, node: str) -> set[tuple[str, str]]:
    return {(t.key, t.effect) for t in client.CoreV1Api(api).read_node(node).spec.taints or []}


@contextmanager
def nodes_not_ready(
    cluster: Devcluster, api: client.ApiClient, nodes: Iterable[str]
) -> Iterator[None]:
    """`nodes` NotReady as Kubernetes marks a node whose kubelet stopped posting status.

    kwok plays every node's kubelet: it is paused (SIGSTOP), so no node's status is
    posted, and each of `nodes` gets the Ready condition the node-lifecycle controller
    writes once its grace period ends (Unknown, NodeStatusUnknown; kwokctl's grace is
    3m20s, too long to wait for). The real kube-controller-manager then taints them
    `node.kubernetes.io/unreachable` (NoSchedule, NoExecute), as for a real node; the
    other nodes keep their node Lease (200 s) meanwhile. On exit kwok resumes: its
    node-initialize stage marks them Ready again and the controller lifts the taints.
    """
    nodes = list(nodes)
    pid_file = cluster.kwok_workdir / "clusters" / cluster.name / "pids" / "kwok-controller.pid"
    kwok = int(pid_file.read_text().strip())
    core = client.CoreV1Api(api)
    os.kill(kwok, signal.SIGSTOP)
    try:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        unknown = {
            "type": "Ready",
            "status": "Unknown",
            "reason": "NodeStatusUnknown",
            "message": "Kubelet stopped posting node status.",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        for node in nodes:
            core.patch_node_status(node, {"status": {"conditions": [unknown]}})
        for node in nodes:
            until(
                f"{node} tainted unreachable",
                lambda n=node: (
                    {(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")} <= node_taints(api, n)
                ),
                60,
            )
        yield
    finally:
        os.kill(kwok, signal.SIGCONT)
    for node in nodes:
        until(
            f"{node} Ready and untainted again",
            lambda n=node: (
                node_ready(api, n) == "True"
                and not any(k == UNREACHABLE for k, _ in node_taints(api, n))
            ),
            90,
        )
