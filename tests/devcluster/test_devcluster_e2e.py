"""The devcluster itself: loopback only, nodes from the topology, the Device CRD,
Prometheus following the pods placed on a node."""

from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.request
from pathlib import Path

import pytest
import yaml
from e2e_workloads import deployment
from kubernetes import client

from devcluster import kube
from devcluster.cluster import Devcluster
from devcluster.prometheus import query
from devcluster.schedconfig import SCHEDULER_TEMPLATE
from devcluster.topology import TIER_LABEL, load_topology

pytestmark = pytest.mark.cluster

TCP_LISTEN = "0A"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    except OSError:
        pass
    return inodes


def _listening(pid_inodes: set[str]) -> list[tuple[str, int]]:
    """(address, port) of listening TCP sockets among these socket inodes."""
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != TCP_LISTEN or inode not in pid_inodes:
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            # /proc prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, words), int(port_hex, 16)))
    return found


def test_every_process_listens_on_loopback_only(devcluster: Devcluster) -> None:
    pids = devcluster.leftover_processes()
    inodes = set().union(*(_socket_inodes(p) for p in pids))
    listening = _listening(inodes)
    # etcd (client + peer), apiserver, controller manager, scheduler, kwok,
    # load simulator, Prometheus, extender.
    assert len(listening) >= 8, listening
    assert {addr for addr, _ in listening} <= {"127.0.0.1"}, listening


def test_kubeconfig_is_the_clusters_own_and_points_at_loopback(devcluster: Devcluster) -> None:
    assert devcluster.kubeconfig.is_relative_to(devcluster.state_dir)
    config = yaml.safe_load(devcluster.kubeconfig.read_text())
    servers = [c["cluster"]["server"] for c in config["clusters"]]
    assert servers
    assert all(s.startswith("https://127.0.0.1:") for s in servers), servers


def test_kwokctl_downloaded_nothing(devcluster: Devcluster) -> None:
    # Every binary is given as a local path; kwokctl's download cache stays
    # empty and its bin/ only links to our build.
    cache = devcluster.kwok_workdir / "cache"
    assert not cache.exists() or not any(cache.rglob("*")), list(cache.rglob("*"))
    links = list((devcluster.kwok_workdir / "clusters" / devcluster.name / "bin").iterdir())
    assert links
    state = devcluster.state()
    assert all(Path(state.bin_dir) in link.resolve().parents for link in links), links


def test_nodes_follow_the_topology_and_are_ready(
    devcluster: Devcluster, kube_api: client.ApiClient
) -> None:
    nodes = {n.metadata.name: n for n in client.CoreV1Api(kube_api).list_node().items if n.metadata}
    for spec in load_topology(devcluster.topology):
        node = nodes[spec.name]
        labels = (node.metadata.labels if node.metadata else None) or {}
        assert labels[TIER_LABEL] == spec.tier
        assert labels["kubernetes.io/arch"] == spec.arch
        assert node.status
        assert node.status.allocatable
        assert node.status.allocatable["cpu"] == spec.cpu
        assert kube.node_is_ready(node)


def test_device_crd_is_installed_and_validates(kube_api: client.ApiClient) -> None:
    objects = client.CustomObjectsApi(kube_api)
    device = {
        "apiVersion": "cloud4iot.io/v1alpha1",
        "kind": "Device",
        "metadata": {"name": "e2e-wearable"},
        "spec": {"address": "AA:BB:CC:DD:EE:01", "displayName": "e2e wearable"},
    }
    objects.create_cluster_custom_object("cloud4iot.io", "v1alpha1", "devices", device)
    try:
        got = objects.get_cluster_custom_object(
            "cloud4iot.io", "v1alpha1", "devices", "e2e-wearable"
        )
        assert got["spec"]["address"] == "AA:BB:CC:DD:EE:01"
        bad = {**device, "metadata": {"name": "e2e-bad"}, "spec": {"address": "not-an-address"}}
        with pytest.raises(client.ApiException) as refused:
            objects.create_cluster_custom_object("cloud4iot.io", "v1alpha1", "devices", bad)
        assert refused.value.status == 422
    finally:
        objects.delete_cluster_custom_object("cloud4iot.io", "v1alpha1", "devices", "e2e-wearable")


def test_status_reports_every_part_up(devcluster: Devcluster) -> None:
    status = devcluster.status()
    assert set(status) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok-controller",
        "loadsim",
        "prometheus",
        "extender",
        "rebalancer",
        "supervisor",
    }
    assert all(status.values()), status


def test_load_follows_the_pods_placed_on_a_node(
    devcluster: Devcluster, kube_api: client.ApiClient, namespace: str
) -> None:
    # One CPU requested on a 2-CPU gateway: idle 0.05 + 0.5.
    kube.create_deployment(
        kube_api,
        namespace,
        deployment(
            "busy",
            node_selector={"kubernetes.io/hostname": "gw-hospital"},
            cpu="1",
            memory="512Mi",
        ),
    )
    kube.wait_pods_bound(kube_api, namespace, "app=busy", 1)

    def simulated() -> dict[str, float] | None:
        with urllib.request.urlopen(f"{devcluster.loadsim_url}/load", timeout=5) as resp:
            load: dict[str, float] = json.load(resp)["gw-hospital"]
        return load if load["cpu"] == pytest.approx(0.55) else None

    load = kube.wait_for("the simulator to count the pod", simulated, 15)
    assert load["memory"] == pytest.approx(0.1 + 0.25)
    cpu_query = '1 - avg by (node) (rate(node_cpu_seconds_total{mode="idle"}[5s]))'

    def in_prometheus() -> float | None:
        value = query(devcluster.prometheus_url, cpu_query).get("gw-hospital")
        return value if value is not None and abs(value - 0.55) < 0.03 else None

    assert kube.wait_for("Prometheus to see the load", in_prometheus, 30) == pytest.approx(
        0.55, abs=0.03
    )


def test_kwokctl_keeps_our_scheduler_client_limits_and_profiles(devcluster: Devcluster) -> None:
    """kwokctl rewrites the configuration (it adds clientConnection.kubeconfig):
    what kube-scheduler is started with still has our qps/burst and sampling."""
    cluster_dir = devcluster.kwok_workdir / "clusters" / devcluster.name
    pid = int((cluster_dir / "pids" / "kube-scheduler.pid").read_text())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    (config_arg,) = [a for a in argv if a.startswith("--config=")]
    started_with = yaml.safe_load(Path(config_arg.split("=", 1)[1]).read_text())
    template = yaml.safe_load(SCHEDULER_TEMPLATE.read_text())
    assert started_with["clientConnection"] == {
        **template["clientConnection"],
        "kubeconfig": str(devcluster.kubeconfig),
    }
    profiles = {p["schedulerName"]: p for p in started_with["profiles"]}
    # The narrowing webhook is installed: our profile samples like the default one
    # (without it, Devcluster(narrowing=False), it scores every node: test_schedconfig).
    assert devcluster.state().narrowing
    assert "percentageOfNodesToScore" not in profiles["cloud4iot-scheduler"]
    assert "percentageOfNodesToScore" not in profiles["default-scheduler"]
    # Its metrics answer without credentials (the benchmark reads the limiter's waits).
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(devcluster.scheduler_metrics_url, context=insecure) as resp:
        assert b"rest_client_rate_limiter_duration_seconds" in resp.read()
