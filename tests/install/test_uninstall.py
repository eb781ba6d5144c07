"""Applying the install again changes nothing; `kubectl delete -k manifests/` removes it.

On a devcluster of its own (as tests/install/test_install.py's), with the kubectl the
install test uses: the README's commands, then the same apply again (no object's spec
changes: every generation stays), then the uninstall. Afterwards nothing of ours is
left: no namespace, CRD, ClusterRole, binding, admission policy or webhook, no object
labelled app.kubernetes.io/part-of=cloud4iot, and (through their ownerReferences to
a Device, whose CRD went) no function Deployment discovery made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud4iot.devices import API_VERSION, KIND
from devcluster.cluster import Devcluster
from tests.install.render import ROOT, kubectl

pytestmark = pytest.mark.cluster

BIN = Path(sys.executable).parent
SYSTEM = "cloud4iot-system"
APPS = "uninstall-apps"
CLUSTER_KINDS = (
    "namespaces",
    "customresourcedefinitions",
    "clusterroles",
    "clusterrolebindings",
    "validatingadmissionpolicies",
    "validatingadmissionpolicybindings",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devcluster]:
    """No extender, no admission of its own: everything of ours comes from manifests/."""
    c = Devcluster(
        f"uninstall-{os.getpid()}",
        state_root=tmp_path_factory.mktemp("uninstall-cluster"),
        with_extender=False,
        sighting_admission=False,
        default_scheduler_only=True,
    )
    c.up()
    try:
        yield c
    finally:
        c.down()
        assert c.leftover_processes() == []


def run(cluster: Devcluster, *argv: str, stdin: str | None = None) -> str:
    exe = {"kubectl": str(kubectl()), "cloud4iot": str(BIN / "cloud4iot")}[argv[0]]
    out = subprocess.run(
        [exe, *argv[1:]],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        cwd=ROOT,
        input=stdin,
    )
    assert out.returncode == 0, f"{argv}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def generations(cluster: Devcluster) -> dict[tuple[str, str, str], Any]:
    """Every object of the install (`kubectl get -k`) -> its metadata.generation."""
    items = json.loads(run(cluster, "kubectl", "get", "-k", "manifests/", "-o", "json"))["items"]
    return {
        (i["kind"], i["metadata"].get("namespace", ""), i["metadata"]["name"]): i["metadata"].get(
            "generation"
        )
        for i in items
    }


def ours(cluster: Devcluster) -> list[str]:
    """What is left of the install: cluster-scoped objects named cloud4iot and anything
    labelled as part of it."""
    left = [
        name
        for kind in CLUSTER_KINDS
        for name in run(cluster, "kubectl", "get", kind, "-o", "name").split()
        if "cloud4iot" in name
    ]
    labelled = run(
        cluster,
        "kubectl",
        "get",
        "all,configmaps,secrets,serviceaccounts,roles,rolebindings,leases,"
        "networkpolicies,poddisruptionbudgets",
        "--all-namespaces",
        "-l",
        "app.kubernetes.io/part-of=cloud4iot",
        "-o",
        "name",
    )
    return left + labelled.split()


def test_reapplying_changes_nothing_and_delete_k_leaves_nothing(cluster: Devcluster) -> None:
    run(cluster, "kubectl", "apply", "--server-side", "-k", "manifests/")
    run(cluster, "cloud4iot", "certs", "--namespace", SYSTEM)
    first = generations(cluster)
    assert len(first) > 40, first
    run(cluster, "kubectl", "apply", "--server-side", "-k", "manifests/")
    assert generations(cluster) == first

    # What the install's users and parts add: Devices, and the function Deployments
    # discovery made for them (owned by their Device, in an application namespace).
    run(cluster, "kubectl", "create", "namespace", APPS)
    for name, address in (("canary", "C0:FF:EE:00:00:01"), ("patient-42-hr", "C0:FF:EE:00:00:42")):
        device = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}}
        device["spec"] = {"address": address}
        run(cluster, "kubectl", "apply", "-f", "-", stdin=json.dumps(device))
        uid = run(cluster, "kubectl", "get", "device", name, "-o", "jsonpath={.metadata.uid}")
        run(cluster, "kubectl", "apply", "-f", "-", stdin=json.dumps(function(name, uid)))
    # The garbage collector watches a new resource type only from its next rediscovery
    # (every 30 s): until the canary's function goes with it, a Device's deletion could
    # go unseen, as it would not in a cluster whose CRD is older than half a minute.
    run(cluster, "kubectl", "delete", "device", "canary")
    wait_until(cluster, lambda: "reader-canary" not in functions(cluster), 120)
    assert ours(cluster), "the install left no trace to look for"

    run(cluster, "kubectl", "delete", "-k", "manifests/", "--wait=true", "--timeout=120s")
    wait_until(cluster, lambda: not ours(cluster) and not functions(cluster), 90)


def function(device: str, uid: str) -> dict[str, Any]:
    """A function Deployment as discovery makes it: controlled by its Device."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"reader-{device}",
            "namespace": APPS,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": device,
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": device}},
            "template": {
                "metadata": {"labels": {"app": device}},
                "spec": {"containers": [{"name": "c", "image": "registry.invalid/reader:1"}]},
            },
        },
    }


def functions(cluster: Devcluster) -> str:
    return run(cluster, "kubectl", "get", "deployments", "-n", APPS, "-o", "name")


def wait_until(cluster: Devcluster, done: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, (ours(cluster), functions(cluster))
        time.sleep(2)
