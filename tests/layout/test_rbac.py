"""Each deployable's shipped RBAC grants exactly what its code calls, and nothing else.

The calls are found in the code: every attribute named like a method of a kubernetes
client API class (`core.patch_node`, `coordination.read_namespaced_lease`, ...) in the
modules a deployable runs. A new call fails here until CALLS says what it needs and
manifests/<deployable>/rbac.yaml grants it.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud4iot.deviceclass import CLASS_PLURAL
from cloud4iot.devices import GROUP, PLURAL, REPORT_PLURAL
from extender.podexplain.gather import POLICY_CONFIGMAP
from extender.settings import Settings
from rebalancer.settings import RebalancerSettings

ROOT = Path(__file__).resolve().parents[2]
LEASES = "coordination.k8s.io"
# The rebalancer runs its own package plus these of extender/ (and the kernel); the
# extender runs extender/ and the kernel.
SHARED = {"extender/state/kube.py", "extender/controllers/election.py"}
SCANNED = ("cloud4iot", "extender", "rebalancer")

# API method the extender uses -> what it needs: (apiGroup, resource, verb). The list
# functions also watch: the reflectors call them with watch=True after the list.
EXTENDER_CALLS: dict[str, set[tuple[str, str, str]]] = {
    "list_node_without_preload_content": {("", "nodes", "list"), ("", "nodes", "watch")},
    # admission's room check: what the pods on each node request
    "list_pod_for_all_namespaces_without_preload_content": {
        ("", "pods", "list"),
        ("", "pods", "watch"),
    },
    "patch_node": {("", "nodes", "patch")},  # the proximity-changed annotation
    "list_cluster_custom_object_without_preload_content": {
        (GROUP, PLURAL, "list"),
        (GROUP, PLURAL, "watch"),
        (GROUP, REPORT_PLURAL, "list"),
        (GROUP, REPORT_PLURAL, "watch"),
        (GROUP, CLASS_PLURAL, "list"),  # the discovery controller
        (GROUP, CLASS_PLURAL, "watch"),
    },
    # the report keeper: one GatewayReport per labelled gateway node, no other; the
    # discovery controller: Devices from candidates, forgotten ones deleted
    "create_cluster_custom_object": {(GROUP, REPORT_PLURAL, "create"), (GROUP, PLURAL, "create")},
    "delete_cluster_custom_object": {(GROUP, REPORT_PLURAL, "delete"), (GROUP, PLURAL, "delete")},
    # the discovery controller: the function templates of a discovered Device
    "create_namespaced_deployment": {("apps", "deployments", "create")},
    # ... parked and restored, or deleted, while the Device is away (the class's whenAway)
    "read_namespaced_deployment": {("apps", "deployments", "get")},
    "patch_namespaced_deployment": {("apps", "deployments", "patch")},
    "delete_namespaced_deployment": {("apps", "deployments", "delete")},
    # ... and its Events on Devices (Discovered, Instantiated, Forgotten), in `default`
    "create_namespaced_event": {("", "events", "create")},
    # server-side apply of status.nearest
    "patch_cluster_custom_object_status": {(GROUP, f"{PLURAL}/status", "patch")},
    "read_namespaced_lease": {(LEASES, "leases", "get")},
    "create_namespaced_lease": {(LEASES, "leases", "create")},
    "replace_namespaced_lease": {(LEASES, "leases", "update")},
    # the gateways' liveness Leases, in the monitors' namespace (gateway-monitor/
    # liveness-readers.yaml; test_gateway_liveness_is_read_in_the_monitors_namespace_only)
    "list_namespaced_lease_without_preload_content": {
        (LEASES, "leases", "list"),
        (LEASES, "leases", "watch"),
    },
}
WATCHED = {
    "list_namespaced_lease_without_preload_content": {
        (LEASES, "leases", "list"),
        (LEASES, "leases", "watch"),
    },
    "list_node_without_preload_content": {("", "nodes", "list"), ("", "nodes", "watch")},
    "list_cluster_custom_object_without_preload_content": {
        (GROUP, PLURAL, "list"),
        (GROUP, PLURAL, "watch"),
        (GROUP, REPORT_PLURAL, "list"),
        (GROUP, REPORT_PLURAL, "watch"),
    },
}
ELECTION = {k: v for k, v in EXTENDER_CALLS.items() if "lease" in k and "list" not in k}
REBALANCER_CALLS: dict[str, set[tuple[str, str, str]]] = {
    **WATCHED,
    **ELECTION,
    "list_pod_for_all_namespaces_without_preload_content": {
        ("", "pods", "list"),
        ("", "pods", "watch"),
    },
    "list_replica_set_for_all_namespaces_without_preload_content": {
        ("apps", "replicasets", "list"),
        ("apps", "replicasets", "watch"),
    },
    "list_deployment_for_all_namespaces_without_preload_content": {
        ("apps", "deployments", "list"),
        ("apps", "deployments", "watch"),
    },
    # rollouts (pod-template annotation), park/unpark (replicas), move records
    "patch_namespaced_deployment": {("apps", "deployments", "patch")},
    "patch_namespaced_stateful_set": {("apps", "statefulsets", "patch")},  # move records
    "patch_namespaced_replica_set": {("apps", "replicasets", "patch")},  # a bare one's records
    # ... read back by a new leader
    "read_namespaced_stateful_set_without_preload_content": {("apps", "statefulsets", "get")},
    "read_namespaced_replica_set_without_preload_content": {("apps", "replicasets", "get")},
    "create_namespaced_pod_eviction": {("", "pods/eviction", "create")},
    "create_namespaced_event": {("", "events", "create")},
}


# The manifests' namespace (each pod's Lease is in its own namespace: --lease-namespace
# from the Downward API); tests/install checks the same for another namespace.
NAMESPACE = "cloud4iot-system"
# Run by the admin with their own credentials, never by a service account.
ADMIN_TOOLS = {"extender/certs.py", "extender/approve.py"}
EXPLAIN = "extender/podexplain/"  # `cloud4iot explain`: what the cloud4iot-explain role grants

# API method `cloud4iot explain` uses -> what it needs (no watch: it reads once).
EXPLAIN_CALLS: dict[str, set[tuple[str, str, str]]] = {
    "read_namespaced_pod": {("", "pods", "get")},
    "read_namespaced_config_map": {("", "configmaps", "get")},  # the cloud4iot-policy
    "list_node": {("", "nodes", "list")},
    "list_cluster_custom_object": {(GROUP, PLURAL, "list"), (GROUP, REPORT_PLURAL, "list")},
    "list_namespaced_event": {("", "events", "list")},
    # the owner (a ReplicaSet's Deployment, a StatefulSet) and its record of moves
    "read_namespaced_replica_set": {("apps", "replicasets", "get")},
    "read_namespaced_deployment": {("apps", "deployments", "get")},
    "read_namespaced_stateful_set": {("apps", "statefulsets", "get")},
}


@dataclass(frozen=True)
class Deployable:
    name: str
    calls: dict[str, set[tuple[str, str, str]]]
    lease: tuple[str, str]  # namespace, name
    forbidden: frozenset[str]  # resources it must never be granted

    @property
    def folder(self) -> Path:
        return ROOT / "manifests" / "placement" / self.name

    def runs(self, path: str) -> bool:
        if path in ADMIN_TOOLS or path.startswith(EXPLAIN):
            return False
        if path.startswith("cloud4iot/"):
            return True
        if self.name == "rebalancer":
            return path.startswith("rebalancer/") or path in SHARED
        return path.startswith("extender/")


EXTENDER = Deployable(
    "extender",
    EXTENDER_CALLS,
    (NAMESPACE, Settings().lease_name),
    # pods: read only (list, watch), for admission's room check; see the test below.
    frozenset({"secrets", "pods/eviction", "configmaps"}),
)
REBALANCER = Deployable(
    "rebalancer",
    REBALANCER_CALLS,
    (NAMESPACE, RebalancerSettings().lease_name),
    frozenset({"secrets", "configmaps", "devices/status", "nodes/status", "pods/status"}),
)
BOTH = pytest.mark.parametrize("d", [EXTENDER, REBALANCER], ids=lambda d: d.name)


@functools.cache
def api_methods() -> frozenset[str]:
    import kubernetes.aio.client as k8s

    names: set[str] = set()
    for name in dir(k8s):
        cls = getattr(k8s, name)
        if name.endswith("Api") and isinstance(cls, type):
            names |= {m for m in vars(cls) if not m.startswith("_")}
    return frozenset(names - {"close"})


def called_api_methods(d: Deployable | None) -> dict[str, list[str]]:
    """API method name -> where the deployable's code uses it (file:line); None:
    where `cloud4iot explain` does."""
    methods = api_methods()
    found: dict[str, list[str]] = {}
    for path in sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if not (d.runs(rel) if d is not None else rel.startswith(EXPLAIN)):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr in methods:
                found.setdefault(node.attr, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def load(d: Deployable, name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((d.folder / name).read_text()) if doc]


def one(d: Deployable, kind: str) -> dict[str, Any]:
    (doc,) = [doc for doc in load(d, "rbac.yaml") if doc["kind"] == kind]
    return doc


def grants(role: dict[str, Any]) -> set[tuple[str, str, str, str | None]]:
    """(apiGroup, resource, verb, resourceName or None for any) of every rule."""
    out = set()
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [None]:
                        out.add((group, resource, verb, name))
    return out


@BOTH
def test_the_code_calls_what_calls_lists(d: Deployable) -> None:
    used = called_api_methods(d)
    assert set(used) == set(d.calls), {
        "calls not in CALLS": {m: used[m] for m in set(used) - set(d.calls)},
        "CALLS the code no longer makes": sorted(set(d.calls) - set(used)),
    }


@BOTH
def test_cluster_role_grants_exactly_the_cluster_wide_calls(d: Deployable) -> None:
    needed = {(g, r, v, None) for need in d.calls.values() for g, r, v in need if g != LEASES}
    assert grants(one(d, "ClusterRole")) == needed


@BOTH
def test_lease_role_grants_only_the_election_lease_in_its_namespace(d: Deployable) -> None:
    namespace, name = d.lease
    role = one(d, "Role")
    assert role["metadata"]["namespace"] == namespace
    # create cannot be limited to a name; get and update can
    assert grants(role) == {
        (LEASES, "leases", "create", None),
        (LEASES, "leases", "get", name),
        (LEASES, "leases", "update", name),
    }
    lease_needs = {
        v
        for method, need in d.calls.items()
        for g, _, v in need
        if g == LEASES and method not in WATCHED  # the gateways' Leases: another Role
    }
    assert lease_needs == {"create", "get", "update"}


@BOTH
def test_no_wildcards_secrets_or_destructive_verbs(d: Deployable) -> None:
    for kind in ("ClusterRole", "Role"):
        for group, resource, verb, _ in grants(one(d, kind)):
            assert "*" not in (group, resource, verb), (kind, group, resource, verb)
            assert resource not in d.forbidden, resource
            if (d.name, group, resource, verb) == ("extender", GROUP, REPORT_PLURAL, "delete"):
                continue  # the report keeper removes the report of a node no longer a gateway
            if (d.name, group, resource, verb) == ("extender", GROUP, PLURAL, "delete"):
                continue  # the discovery controller forgets discovered Devices (issue 25)
            if (d.name, group, resource, verb) == ("extender", "apps", "deployments", "delete"):
                # a class with whenAway: delete (issue 25); the role already creates
                # Deployments anywhere, so this adds no reach
                continue
            assert verb not in {"delete", "deletecollection", "escalate", "bind", "impersonate"}


def test_the_extender_only_reads_pods() -> None:
    pods = {v for _, r, v, _ in grants(one(EXTENDER, "ClusterRole")) if r.startswith("pods")}
    assert pods == {"list", "watch"}


def test_only_the_rebalancer_may_evict_and_it_never_writes_devices() -> None:
    extender = {r for _, r, _, _ in grants(one(EXTENDER, "ClusterRole"))}
    rebalancer = grants(one(REBALANCER, "ClusterRole"))
    assert "pods/eviction" not in extender
    assert ("", "pods/eviction", "create", None) in rebalancer
    assert not {(g, r) for g, r, v, _ in rebalancer if g == GROUP and v != "list" and v != "watch"}


@BOTH
def test_bindings_give_the_roles_to_the_deployments_service_account(d: Deployable) -> None:
    kinds = sorted(doc["kind"] for doc in load(d, "rbac.yaml"))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"]
    sa = one(d, "ServiceAccount")["metadata"]
    (deployment,) = [doc for doc in load(d, "deployment.yaml") if doc["kind"] == "Deployment"]
    assert deployment["metadata"]["namespace"] == sa["namespace"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["name"]
    subject = {"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}
    for binding_kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding, role = one(d, binding_kind), one(d, role_kind)
        assert binding["subjects"] == [subject]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": role["metadata"]["name"],
        }
    assert one(d, "RoleBinding")["metadata"]["namespace"] == one(d, "Role")["metadata"]["namespace"]


@BOTH
def test_two_replicas_a_disruption_budget_and_a_service_per_deployable(d: Deployable) -> None:
    docs = {doc["kind"]: doc for doc in load(d, "deployment.yaml")}
    assert docs["Deployment"]["spec"]["replicas"] == 2
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    # The Service and the budget select the deployable's pods by its name (the template
    # also carries app.kubernetes.io/part-of, shared by every pod of the install).
    name = {"app.kubernetes.io/name": labels["app.kubernetes.io/name"]}
    assert labels["app.kubernetes.io/part-of"] == "cloud4iot"
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"] == name
    assert docs["Service"]["spec"]["selector"] == name
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == name


@BOTH
def test_kustomization_lists_every_manifest(d: Deployable) -> None:
    (kustomization,) = load(d, "kustomization.yaml")
    files = {p.name for p in d.folder.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    (top,) = yaml.safe_load_all((ROOT / "manifests/placement/kustomization.yaml").read_text())
    assert d.name in top["resources"]


def explain_role() -> dict[str, Any]:
    path = ROOT / "manifests" / "placement" / "explain-role.yaml"
    (role,) = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert role["kind"] == "ClusterRole"
    return dict(role)


def test_explain_calls_what_its_role_grants_and_reads_only() -> None:
    """`cloud4iot explain` runs with an admin's own credentials: the cloud4iot-explain
    ClusterRole an admin binds grants exactly its calls, all reads, and no Secret."""
    used = called_api_methods(None)
    assert set(used) == set(EXPLAIN_CALLS), {
        "calls not in EXPLAIN_CALLS": {m: used[m] for m in set(used) - set(EXPLAIN_CALLS)},
        "EXPLAIN_CALLS the code no longer makes": sorted(set(EXPLAIN_CALLS) - set(used)),
    }
    # by name where the code reads one object by name: the policy's ConfigMap (a `get`
    # of any ConfigMap read every one of the cluster's by name)
    named = {("", "configmaps", "get"): POLICY_CONFIGMAP}
    needed = {
        (g, r, v, named.get((g, r, v))) for need in EXPLAIN_CALLS.values() for g, r, v in need
    }
    granted = grants(explain_role())
    assert granted == needed
    assert {v for _, _, v, _ in granted} <= {"get", "list"}
    assert not {r for _, r, _, _ in granted} & {"secrets", "pods/eviction"}


def test_explain_role_ships_with_the_placement() -> None:
    (top,) = yaml.safe_load_all((ROOT / "manifests/placement/kustomization.yaml").read_text())
    assert "explain-role.yaml" in top["resources"]


def test_gateway_liveness_is_read_in_the_monitors_namespace_only() -> None:
    folder = ROOT / "manifests" / "gateway-monitor"
    docs = [d for d in yaml.safe_load_all((folder / "liveness-readers.yaml").read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    (monitor_sa,) = [
        d
        for d in yaml.safe_load_all((folder / "rbac.yaml").read_text())
        if d and d["kind"] == "ServiceAccount"
    ]
    namespace = monitor_sa["metadata"]["namespace"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == namespace
    assert grants(role) == {(LEASES, "leases", verb, None) for verb in ("get", "list", "watch")}
    assert {(s["name"], s["namespace"]) for s in binding["subjects"]} == {
        ("cloud4iot-extender", NAMESPACE),
        ("cloud4iot-rebalancer", NAMESPACE),
    }
    for d in (EXTENDER, REBALANCER):
        (deployment,) = [x for x in load(d, "deployment.yaml") if x["kind"] == "Deployment"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["GATEWAY_NAMESPACE"] == namespace
