"""The shipped DaemonSet and RBAC keep the least-privilege promises the README makes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cloud4iot.devices import IDENTITY_KEYS_SECRET
from gateway_monitor.cli import build_parser

FOLDER = Path(__file__).resolve().parents[2] / "manifests" / "gateway-monitor"


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((FOLDER / name).read_text()) if d]


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = load("kustomization.yaml")
    files = {p.name for p in FOLDER.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files | {"../policy"}
    (admission,) = load("admission/kustomization.yaml")
    assert admission["resources"] == ["report-admission.yaml"]


def test_cluster_role_reads_devices_and_writes_only_report_status() -> None:
    role = next(d for d in load("rbac.yaml") if d["kind"] == "ClusterRole")
    grants = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert grants == {
        ("cloud4iot.io", "devices", "get"),
        ("cloud4iot.io", "devices", "list"),
        ("cloud4iot.io", "devices", "watch"),
        ("cloud4iot.io", "deviceclasses", "list"),  # discovery filters (issue 25)
        ("cloud4iot.io", "deviceclasses", "watch"),
        ("cloud4iot.io", "gatewayreports/status", "get"),
        ("cloud4iot.io", "gatewayreports/status", "update"),
        ("cloud4iot.io", "gatewayreports/status", "patch"),
    }
    # its liveness Lease: in its own namespace, create once and renew; no delete/list/watch;
    # and the identity-keys Secret by name only, read-only (no Secret in the ClusterRole)
    (role,) = [d for d in load("rbac.yaml") if d["kind"] == "Role"]
    (binding,) = [d for d in load("rbac.yaml") if d["kind"] == "RoleBinding"]
    (sa,) = [d for d in load("rbac.yaml") if d["kind"] == "ServiceAccount"]
    assert role["metadata"]["namespace"] == sa["metadata"]["namespace"]
    assert [
        (r["apiGroups"], r["resources"], r.get("resourceNames"), r["verbs"]) for r in role["rules"]
    ] == [
        (["coordination.k8s.io"], ["leases"], None, ["get", "create", "update"]),
        ([""], ["secrets"], [IDENTITY_KEYS_SECRET], ["get", "list", "watch"]),
    ]
    assert IDENTITY_KEYS_SECRET not in yaml.safe_dump(load("liveness-readers.yaml"))
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "cloud4iot-gateway"}
    ]


def test_daemonset_runs_on_gateways_with_host_dbus_and_no_privileges() -> None:
    (ds,) = load("daemonset.yaml")
    (sa,) = [d for d in load("rbac.yaml") if d["kind"] == "ServiceAccount"]
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud4iot.io/tier": "gateway"}
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert ds["metadata"]["namespace"] == sa["metadata"]["namespace"]
    assert not pod.get("hostNetwork", False)
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert not sc.get("privileged", False)
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dbus"]["hostPath"] == {"path": "/run/dbus", "type": "Directory"}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["dbus"] == {"name": "dbus", "mountPath": "/run/dbus", "readOnly": True}
    socket = env["DBUS_SYSTEM_BUS_ADDRESS"]["value"]
    assert socket.startswith("unix:path=/run/dbus/")
    # the args are ones the CLI accepts, and the probes hit our port
    build_parser().parse_args(["--node", "x", *container.get("args", [])])
    port = container["ports"][0]["containerPort"]
    assert build_parser().parse_args(["--node", "x"]).port == port
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_report_policy_constrains_exactly_the_monitors_service_account() -> None:
    policy, binding, *_ = load("admission/report-admission.yaml")
    (sa,) = [d for d in load("rbac.yaml") if d["kind"] == "ServiceAccount"]
    spec = policy["spec"]
    (condition,) = spec["matchConditions"]
    # The ServiceAccount by name from the request's username, never a literal namespace
    # (the namespaces overlay moves it); the apiserver runs the policy in
    # tests/gateway_monitor/test_report_admission.py.
    assert f"== '{sa['metadata']['name']}'" in condition["expression"]
    assert f"{sa['metadata']['namespace']}:" not in condition["expression"]
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["gatewayreports", "gatewayreports/status"]
    assert "UPDATE" in rule["operations"]
    names = [v["expression"] for v in spec["validations"]]
    assert "request.name == variables.node" in names
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]


def test_lease_policy_holds_a_monitor_to_the_lease_named_and_held_as_its_node() -> None:
    *_, policy, binding = load("admission/report-admission.yaml")
    (sa,) = [d for d in load("rbac.yaml") if d["kind"] == "ServiceAccount"]
    spec = policy["spec"]
    assert policy["metadata"]["name"] == "cloud4iot-gateway-leases"
    (condition,) = spec["matchConditions"]
    assert f"== '{sa['metadata']['name']}'" in condition["expression"]
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"]) == (["coordination.k8s.io"], ["leases"])
    checks = " ".join(v["expression"] for v in spec["validations"])
    assert "request.name == variables.node" in checks
    assert "holderIdentity" in checks
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
