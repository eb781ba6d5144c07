"""The devcluster's supervisor: a dead control-plane process comes back by itself, a
component stopped on purpose stays stopped, and one can be restarted on demand.

These tests disturb the shared cluster briefly and leave it whole.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from e2e_workloads import deployment
from kubernetes import client

from devcluster import kube
from devcluster.cluster import Devcluster
from devcluster.processes import is_alive
from tests.cluster_world import until

pytestmark = pytest.mark.cluster


def pid_file(cluster: Devcluster, name: str) -> Path:
    return cluster.kwok_workdir / "clusters" / cluster.name / "pids" / f"{name}.pid"


def pid_of(cluster: Devcluster, name: str) -> int:
    return int(pid_file(cluster, name).read_text().strip())


def test_a_killed_controller_manager_is_restarted_and_namespaces_still_go(
    devcluster: Devcluster, kube_api: client.ApiClient
) -> None:
    before = devcluster.restarts().get("kube-controller-manager", 0)
    old = pid_of(devcluster, "kube-controller-manager")
    os.kill(old, signal.SIGKILL)  # as when it exits after losing the apiserver
    new = until(
        "a new kube-controller-manager",
        lambda: (p := pid_of(devcluster, "kube-controller-manager")) != old and is_alive(p) and p,
        30,
        tolerate=(client.ApiException,),
    )
    assert is_alive(new)
    assert devcluster.restarts()["kube-controller-manager"] == before + 1
    assert devcluster.status()["kube-controller-manager"]
    # Namespace deletion is the controller manager's work: it completes again.
    name = f"sv-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(kube_api, name)
    core = client.CoreV1Api(kube_api)
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    until(f"namespace {name} deleted", gone, 90, tolerate=(client.ApiException,))


def test_a_component_stopped_on_purpose_stays_stopped_until_started(
    devcluster: Devcluster,
) -> None:
    devcluster.stop_component("loadsim")
    try:
        time.sleep(6)  # twice the supervisor's grace
        assert devcluster.state().components["loadsim"].pid is None
        assert not devcluster.status()["loadsim"]
    finally:
        devcluster.start_component("loadsim")
    assert devcluster.status()["loadsim"]


def test_restart_one_component_on_demand_and_scheduling_goes_on(
    devcluster: Devcluster, kube_api: client.ApiClient, namespace: str
) -> None:
    old = pid_of(devcluster, "kube-scheduler")
    new = devcluster.restart("kube-scheduler")
    assert new != old
    assert pid_of(devcluster, "kube-scheduler") == new
    assert is_alive(new)
    assert not is_alive(old)
    kube.create_deployment(kube_api, namespace, deployment("after-restart", function="anonymiser"))
    pods = until(
        "the pod bound by the restarted scheduler",
        lambda: [
            p for p in kube.pods_of(kube_api, namespace, "app=after-restart") if kube.is_bound(p)
        ],
        60,
        tolerate=(client.ApiException,),
    )
    assert kube.node_of(pods[0]) in {"gw-home", "gw-hospital", "edge-1"}  # anonymiser: never cloud
