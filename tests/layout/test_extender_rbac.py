"""The extender's shipped RBAC grants exactly what its code calls, and nothing else.

The calls are found in the code: every attribute of `extender/` named like a method of a
kubernetes client API class (`core.patch_node`, `coordination.read_namespaced_lease`, ...).
A new call fails here until CALLS says what it needs and manifests/extender/rbac.yaml
grants it.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

import yaml

from extender.settings import Settings
from extender.state.devices import GROUP, PLURAL

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "manifests" / "extender"
LEASES = "coordination.k8s.io"

# API method the extender uses -> what it needs: (apiGroup, resource, verb). The list
# functions also watch: the reflectors call them with watch=True after the list.
CALLS: dict[str, set[tuple[str, str, str]]] = {
    "list_node_without_preload_content": {("", "nodes", "list"), ("", "nodes", "watch")},
    "patch_node": {("", "nodes", "patch")},  # the proximity-changed annotation
    "list_cluster_custom_object_without_preload_content": {
        (GROUP, PLURAL, "list"),
        (GROUP, PLURAL, "watch"),
    },
    # server-side apply of status.nearest
    "patch_cluster_custom_object_status": {(GROUP, f"{PLURAL}/status", "patch")},
    "read_namespaced_lease": {(LEASES, "leases", "get")},
    "create_namespaced_lease": {(LEASES, "leases", "create")},
    "replace_namespaced_lease": {(LEASES, "leases", "update")},
}


@functools.cache
def api_methods() -> frozenset[str]:
    import kubernetes.aio.client as k8s

    names: set[str] = set()
    for name in dir(k8s):
        cls = getattr(k8s, name)
        if name.endswith("Api") and isinstance(cls, type):
            names |= {m for m in vars(cls) if not m.startswith("_")}
    return frozenset(names - {"close"})


def called_api_methods() -> dict[str, list[str]]:
    """API method name -> where the extender uses it (file:line)."""
    methods = api_methods()
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "extender").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr in methods:
                found.setdefault(node.attr, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((FOLDER / name).read_text()) if d]


def one(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in load("rbac.yaml") if d["kind"] == kind]
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


def test_the_code_calls_what_calls_lists() -> None:
    used = called_api_methods()
    assert set(used) == set(CALLS), {
        "calls not in CALLS": {m: used[m] for m in set(used) - set(CALLS)},
        "CALLS the code no longer makes": sorted(set(CALLS) - set(used)),
    }


def test_cluster_role_grants_exactly_the_cluster_wide_calls() -> None:
    needed = {(g, r, v, None) for need in CALLS.values() for g, r, v in need if g != LEASES}
    assert grants(one("ClusterRole")) == needed


def test_lease_role_grants_only_the_election_lease_in_its_namespace() -> None:
    settings = Settings()
    role = one("Role")
    assert role["metadata"]["namespace"] == settings.lease_namespace
    # create cannot be limited to a name; get and update can
    assert grants(role) == {
        (LEASES, "leases", "create", None),
        (LEASES, "leases", "get", settings.lease_name),
        (LEASES, "leases", "update", settings.lease_name),
    }
    lease_needs = {v for need in CALLS.values() for g, _, v in need if g == LEASES}
    assert lease_needs == {"create", "get", "update"}


def test_no_wildcards_secrets_pods_or_eviction() -> None:
    for kind in ("ClusterRole", "Role"):
        for group, resource, verb, _ in grants(one(kind)):
            assert "*" not in (group, resource, verb), (kind, group, resource, verb)
            assert resource not in {"secrets", "pods", "pods/eviction", "configmaps"}, resource
            assert verb not in {"delete", "deletecollection", "escalate", "bind", "impersonate"}


def test_bindings_give_the_roles_to_the_deployments_service_account() -> None:
    kinds = sorted(d["kind"] for d in load("rbac.yaml"))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"]
    sa = one("ServiceAccount")["metadata"]
    (deployment,) = [d for d in load("deployment.yaml") if d["kind"] == "Deployment"]
    assert deployment["metadata"]["namespace"] == sa["namespace"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["name"]
    subject = {"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}
    for binding_kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding, role = one(binding_kind), one(role_kind)
        assert binding["subjects"] == [subject]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": role["metadata"]["name"],
        }
    assert one("RoleBinding")["metadata"]["namespace"] == one("Role")["metadata"]["namespace"]


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = load("kustomization.yaml")
    files = {p.name for p in FOLDER.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
