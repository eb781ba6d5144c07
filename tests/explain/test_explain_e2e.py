"""`cloud4iot explain pod/NAME` (and `kubectl cloud4iot explain`) on the devcluster: a pod
no node can take, and a running pod the rebalancer moved; the table and `-o json`
parsed back; a user with only read access (no Secret, no scheduler key) explains."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from kubernetes import client

from devcluster import kube
from devcluster.cluster import Devcluster
from tests.cluster_world import nearest_of, until
from tests.install.render import kubectl
from tests.rebalancer.rebalancer_e2e_helpers import (
    Radio,
    fast_rebalancing,
    function_deployment,
    only_pod,
)
from tests.state.cluster_helpers import create_device

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent


def explain(
    cluster: Devcluster, *args: str, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "cloud4iot"),
            "explain",
            *args,
            "--kubeconfig",
            str(kubeconfig or cluster.kubeconfig),
            "--prometheus-url",
            cluster.prometheus_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def anonymiser_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            # amd64 only: the arm64 gateways are refused for their architecture.
            "annotations": {"cloud4iot.io/function": "anonymiser", "cloud4iot.io/archs": "amd64"},
        },
        "spec": {
            "schedulerName": "cloud4iot-scheduler",
            "containers": [{"name": "f", "image": "registry.invalid/f:1"}],
        },
    }


REFUSED = ("Unschedulable", "SchedulerError")


def test_a_pod_no_node_takes_is_explained_by_reason(devcluster, kube_api, namespace):
    policy = ("--policy", str(devcluster.policy_file))
    devcluster.set_load("edge-1", memory=0.97)  # anonymiser's memory limit is 0.90
    core = client.CoreV1Api(kube_api)
    # The same command on a pod no scheduler serves reads load from the Prometheus the
    # extender reads: once edge-1 shows overloaded there, the extender has it next.
    probe = anonymiser_pod("probe")
    probe["spec"]["schedulerName"] = "nobody"
    core.create_namespaced_pod(namespace, probe)

    def overloaded() -> bool:
        done = explain(devcluster, "pod/probe", "-n", namespace, "-o", "json", *policy)
        doc = orjson.loads(done.stdout)
        return any(n["node"] == "edge-1" and n["code"] == "overloaded" for n in doc["nodes"])

    until("edge-1 overloaded in Prometheus", overloaded, 60)
    time.sleep(6)  # the extender's refresh interval (5 s)
    core.create_namespaced_pod(namespace, anonymiser_pod("anon"))

    def refused() -> bool:
        pod = core.read_namespaced_pod("anon", namespace)
        conds = [c for c in pod.status.conditions or [] if c.type == "PodScheduled"]
        # SchedulerError: every node refused, edge-1 for load, which no cluster event
        # announces, so the extender answers an Error and kube-scheduler retries.
        return bool(conds) and conds[0].reason in REFUSED

    until("kube-scheduler to report the pod unschedulable", refused, 60)
    assert core.read_namespaced_pod("anon", namespace).spec.node_name is None

    done = explain(
        devcluster,
        "pod/anon",
        "-n",
        namespace,
        "-o",
        "json",
        "--policy",
        str(devcluster.policy_file),
    )
    assert done.returncode == 0, done.stderr
    doc = orjson.loads(done.stdout)
    assert doc["pod"] == f"{namespace}/anon"
    assert doc["phase"] == "Pending"
    assert doc["node"] is None
    groups = {g["code"]: set(g["nodes"]) for g in doc["groups"]}
    assert groups == {
        "tier_not_allowed": {"cloud-1", "cloud-2"},
        "arch_mismatch": {"gw-home", "gw-hospital"},
        "overloaded": {"edge-1"},
    }, doc["groups"]
    assert doc["best"] is None
    assert doc["load"]["nodes_with_load"] == 5
    assert doc["podScheduled"]["status"] == "False"
    assert doc["podScheduled"]["reason"] in REFUSED
    failed = [e for e in doc["schedulerEvents"] if e["reason"] == "FailedScheduling"]
    assert failed, doc["schedulerEvents"]
    assert failed[0]["type"] == "Warning"
    # kube-scheduler's own Event, as it printed our refusal: whole, not "97%!a(MISSING)bove"
    assert "memory 97 percent above the limit 90 percent" in failed[0]["message"], failed
    assert "%!" not in failed[0]["message"], failed
    assert doc["summary"].startswith("pending: the extender refuses all 5 nodes")

    # The table: one row per reason, the nodes that share it.
    text = explain(devcluster, "pod/anon", "-n", namespace, "--policy", str(devcluster.policy_file))
    assert text.returncode == 0, text.stderr
    rows = {line.split()[0]: line for line in text.stdout.splitlines() if line[:1].islower()}
    assert "cloud-1, cloud-2" in rows["tier_not_allowed"]
    assert "gw-home, gw-hospital" in rows["arch_mismatch"]
    assert rows["overloaded"].split()[1:3] == ["1", "edge-1"], rows["overloaded"]
    assert f"PodScheduled=False {doc['podScheduled']['reason']}" in text.stdout

    # -o wide: one row per node; -o yaml parses to the JSON document.
    wide = explain(
        devcluster, "anon", "-n", namespace, "-o", "wide", "--policy", str(devcluster.policy_file)
    )
    node_rows = [
        line.split()[0]
        for line in wide.stdout.splitlines()
        if line.split()[:1]
        and line.split()[0] in {"gw-home", "gw-hospital", "edge-1", "cloud-1", "cloud-2"}
    ]
    assert sorted(node_rows) == ["cloud-1", "cloud-2", "edge-1", "gw-home", "gw-hospital"]
    as_yaml = yaml.safe_load(
        explain(
            devcluster,
            "pod/anon",
            "-n",
            namespace,
            "-o",
            "yaml",
            "--policy",
            str(devcluster.policy_file),
        ).stdout
    )
    assert {g["code"] for g in as_yaml["groups"]} == set(groups)

    # Once edge-1 frees up, the same command says it is feasible now.
    devcluster.set_load("edge-1", memory=0.2)
    time.sleep(1.5)
    after = orjson.loads(
        explain(
            devcluster,
            "pod/anon",
            "-n",
            namespace,
            "-o",
            "json",
            "--policy",
            str(devcluster.policy_file),
        ).stdout
    )
    if after["node"] is None:
        assert after["best"] == "edge-1"


def test_errors_are_kubectl_like(devcluster, kube_api, namespace):
    missing = explain(
        devcluster, "pod/nope", "-n", namespace, "--policy", str(devcluster.policy_file)
    )
    assert missing.returncode == 1
    assert 'pods "nope"' in missing.stderr
    assert "NotFound" in missing.stderr
    assert "Traceback" not in missing.stderr
    wrong_kind = explain(devcluster, "deploy/x", "-n", namespace)
    assert wrong_kind.returncode == 2
    assert "pods only" in wrong_kind.stderr
    bad_output = explain(devcluster, "pod/x", "-o", "xml")
    assert bad_output.returncode == 2
    assert "invalid choice" in bad_output.stderr
    # No policy ConfigMap where the extender is said to run: say what to give.
    client.CoreV1Api(kube_api).create_namespaced_pod(namespace, anonymiser_pod("x"))
    no_policy = explain(devcluster, "pod/x", "-n", namespace, "--system-namespace", namespace)
    assert no_policy.returncode == 1
    assert "--policy" in no_policy.stderr


@pytest.fixture
def radio(kube_api: client.ApiClient) -> Iterator[Radio]:
    r = Radio(kube_api)
    yield r
    r.close()


def test_a_moved_pod_is_explained_with_its_history(devcluster, kube_api, namespace, radio):
    """Through kubectl's plugin mechanism: `kubectl cloud4iot explain ... --history`."""
    with fast_rebalancing(devcluster):
        device = f"dev-{uuid.uuid4().hex[:8]}"
        create_device(kube_api, device, f"C0:FF:EE:{uuid.uuid4().hex[:2]}:00:02".upper())
        radio.set(device, "gw-home", -55)
        until("gw-home nearest", lambda: nearest_of(kube_api, device) == "gw-home")
        kube.create_deployment(
            kube_api, namespace, function_deployment("reader", "mhealth-consolidator", device)
        )
        first = until("placed", lambda: only_pod(kube_api, namespace, "app=reader"))
        assert kube.node_of(first) == "gw-home"
        radio.set(device, "gw-hospital", -50)
        radio.set(device, "gw-home", -80)

        def moved() -> client.V1Pod | None:
            pod = only_pod(kube_api, namespace, "app=reader")
            return pod if pod is not None and pod.metadata.uid != first.metadata.uid else None

        second = until("moved to gw-hospital", moved, 90)
        assert kube.node_of(second) == "gw-hospital"
        env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "KUBECONFIG": str(devcluster.kubeconfig),
        }
        done = subprocess.run(
            [
                str(kubectl()),
                "cloud4iot",
                "explain",
                f"pod/{second.metadata.name}",
                "-n",
                namespace,
                "--history",
                "-o",
                "json",
                "--policy",
                str(devcluster.policy_file),
                "--prometheus-url",
                devcluster.prometheus_url,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    doc = orjson.loads(done.stdout)
    assert doc["node"] == "gw-hospital"
    assert doc["phase"] == "Running"
    assert doc["current"]["node"] == "gw-hospital"
    assert doc["current"]["feasible"]
    assert doc["current"]["score"] >= (doc["bestAlternative"] or {"score": 0})["score"]
    assert doc["summary"].startswith("on gw-hospital")
    # What the rebalancer would do: nothing, it is where the device is (with its limits).
    plan = doc["rebalancer"]
    assert (plan["action"], plan["rule"]) == ("stays", None), plan
    policy = yaml.safe_load(devcluster.policy_file.read_text())["spec"].get("rebalance", {})
    assert plan["limits"]["minImprovement"] == policy.get("minImprovement", 2)
    history = doc["history"]
    roaming = [h for h in history if h["what"] == "Roaming"]
    assert roaming, history
    assert "gw-home -> gw-hospital" in roaming[0]["detail"]
    assert roaming[0]["from"] == "cloud4iot-rebalancer"
    # The device's nearest decision that drove the move, and the pin at creation with
    # the candidates' scores and that decision as the admission saw it.
    nearest = [h for h in history if h["what"] == "NearestGateway"]
    assert [h["detail"] for h in nearest] == [f"device {device} nearest gw-hospital"], history
    (narrowed,) = [h for h in history if h["what"] == "Narrowed"]
    assert narrowed["detail"].startswith("pinned to gw-hospital ("), narrowed
    assert f"device {device} nearest gw-hospital" in narrowed["detail"], narrowed
    scheduled = [h for h in history if h["what"] == "Scheduled"]
    assert scheduled, history
    assert "gw-hospital" in scheduled[-1]["detail"]
    # Kept on the workload, where it outlives Events: the bounded list of moves.
    recorded = [h for h in history if "recorded on the workload" in h["from"]]
    dep = client.AppsV1Api(kube_api).read_namespaced_deployment("reader", namespace)
    moves = orjson.loads(dep.metadata.annotations["cloud4iot.io/moves"])
    assert [(m["reason"], m["from"], m["to"]) for m in moves] == [
        ("Roaming", "gw-home", "gw-hospital")
    ]
    assert recorded == [] or recorded[0]["what"] == "Roaming"
    times = [h["time"] for h in history if h["time"]]
    assert times == sorted(times)


EXPLAIN_ROLE = Path(__file__).resolve().parents[2] / "manifests" / "placement" / "explain-role.yaml"


def user_kubeconfig(cluster: Devcluster, tmp_path: Path, sa: str, ns: str) -> Path:
    """A kubeconfig holding only a TokenRequest token of ServiceAccount `sa`."""
    token = subprocess.run(
        [str(kubectl()), "--kubeconfig", str(cluster.kubeconfig), "create", "token", sa, "-n", ns],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa, "namespace": ns}}],
        "current-context": "c",
    }
    path = tmp_path / f"kubeconfig-{sa}"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_reader_without_secrets_explains_with_the_shipped_role(
    devcluster, kube_api, namespace, tmp_path
):
    """The shipped ClusterRole cloud4iot-explain is enough: no Secret (so no scheduler
    client key), the policy from the cloud4iot-policy ConfigMap, the same verdicts."""
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    role = yaml.safe_load(EXPLAIN_ROLE.read_text())
    role["metadata"]["name"] = f"explain-{namespace}"
    rbac.create_cluster_role(role)
    try:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": "alice"}})
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": f"explain-{namespace}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role["metadata"]["name"],
                },
                "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": namespace}],
            }
        )
        # The policy in force, where the extender would run (here: the test namespace).
        core.create_namespaced_config_map(
            namespace,
            {
                "metadata": {"name": "cloud4iot-policy"},
                "data": {"policy.yaml": devcluster.policy_file.read_text()},
            },
        )
        core.create_namespaced_secret(
            namespace, {"metadata": {"name": "scheduler-client"}, "stringData": {"tls.key": "k"}}
        )
        core.create_namespaced_pod(namespace, anonymiser_pod("anon"))
        alice = user_kubeconfig(devcluster, tmp_path, "alice", namespace)

        def can(*what: str) -> str:
            return subprocess.run(
                [str(kubectl()), "--kubeconfig", str(alice), "auth", "can-i", *what],
                capture_output=True,
                text=True,
            ).stdout.strip()

        assert can("get", "secrets", "-n", namespace) == "no"
        assert can("get", "secrets", "-n", "kube-system") == "no"
        assert can("list", "devices.cloud4iot.io") == "yes"

        mine = explain(
            devcluster, "pod/anon", "--system-namespace", namespace, "-o", "json", kubeconfig=alice
        )
        assert mine.returncode == 0, mine.stderr
        doc = orjson.loads(mine.stdout)
        assert doc["pod"] == f"{namespace}/anon"  # the context's namespace, no -n
        assert (
            doc["policy"].split("@")[0]
            == yaml.safe_load(devcluster.policy_file.read_text())["metadata"]["name"]
        )
        admins = orjson.loads(
            explain(
                devcluster,
                "pod/anon",
                "-n",
                namespace,
                "-o",
                "json",
                "--policy",
                str(devcluster.policy_file),
            ).stdout
        )
        verdicts = lambda d: [(n["node"], n["code"]) for n in d["nodes"]]  # noqa: E731
        assert verdicts(doc) == verdicts(admins)
        assert doc["policy"] == admins["policy"]
    finally:
        rbac.delete_cluster_role_binding(f"explain-{namespace}")
        rbac.delete_cluster_role(role["metadata"]["name"])
