"""Small Kubernetes helpers for the launcher and the end-to-end tests (sync client)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from devcluster.topology import NodeSpec

T = TypeVar("T")


M = TypeVar("M")


def api_client(kubeconfig: Path) -> client.ApiClient:
    # persist_config=False: never write back to the kubeconfig file.
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), persist_config=False
    )
    return api


def model(cls: type[M], manifest: dict[str, Any]) -> M:
    """A client model (V1Pod, ...) from a manifest in the usual camelCase form."""
    obj: M | None = cls.from_dict(manifest)  # type: ignore[attr-defined]
    if obj is None:
        raise ValueError(f"empty manifest for {cls.__name__}")
    return obj


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout_s: float = 60.0,
    interval_s: float = 0.25,
) -> T:
    """Call probe until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except ApiException as err:  # e.g. the apiserver is still starting
            last_error = err
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}")
        time.sleep(interval_s)


def wait_control_plane(api: client.ApiClient, timeout_s: float = 90.0) -> None:
    """Ready for pods: the apiserver answers and the controller manager made the
    `default` ServiceAccount (without it, pods are refused at admission)."""
    core = client.CoreV1Api(api)
    wait_for(
        "the default ServiceAccount",
        lambda: core.read_namespaced_service_account("default", "default"),
        timeout_s,
    )


def install_crd(api: client.ApiClient, path: Path, timeout_s: float = 30.0) -> str:
    """Create (or update) a CRD from a YAML file and wait until it is Established."""
    manifest = yaml.safe_load(path.read_text())
    name: str = manifest["metadata"]["name"]
    ext = client.ApiextensionsV1Api(api)
    body = model(client.V1CustomResourceDefinition, manifest)
    try:
        ext.create_custom_resource_definition(body)
    except ApiException as err:
        if err.status != 409:
            raise
        current = ext.read_custom_resource_definition(name)
        if body.metadata and current.metadata:
            body.metadata.resource_version = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, body)

    def established() -> bool:
        crd = ext.read_custom_resource_definition(name)
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(f"CRD {name} to be Established", established, timeout_s)
    return name


def install_admission_policies(api: client.ApiClient, path: Path) -> list[str]:
    """Create (or replace) the admission policies and bindings of a YAML file."""
    return install_admission_documents(api, path.read_text())


def install_admission_documents(api: client.ApiClient, text: str) -> list[str]:
    """Create (or replace) admission policies, their Bindings and webhook configurations."""
    admission = client.AdmissionregistrationV1Api(api)
    kinds: dict[str, tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = {
        "ValidatingAdmissionPolicy": (
            admission.create_validating_admission_policy,
            admission.read_validating_admission_policy,
            admission.replace_validating_admission_policy,
        ),
        "ValidatingAdmissionPolicyBinding": (
            admission.create_validating_admission_policy_binding,
            admission.read_validating_admission_policy_binding,
            admission.replace_validating_admission_policy_binding,
        ),
        "MutatingAdmissionPolicy": (
            admission.create_mutating_admission_policy,
            admission.read_mutating_admission_policy,
            admission.replace_mutating_admission_policy,
        ),
        "MutatingAdmissionPolicyBinding": (
            admission.create_mutating_admission_policy_binding,
            admission.read_mutating_admission_policy_binding,
            admission.replace_mutating_admission_policy_binding,
        ),
        "MutatingWebhookConfiguration": (
            admission.create_mutating_webhook_configuration,
            admission.read_mutating_webhook_configuration,
            admission.replace_mutating_webhook_configuration,
        ),
    }
    installed = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        create, read, replace = kinds[doc["kind"]]
        name: str = doc["metadata"]["name"]
        try:
            create(doc)
        except ApiException as err:
            if err.status != 409:
                raise
            doc["metadata"]["resourceVersion"] = read(name).metadata.resource_version
            replace(name, doc)
        installed.append(f"{doc['kind']}/{name}")
    return installed


def apply_nodes(api: client.ApiClient, nodes: Iterable[NodeSpec], workers: int = 8) -> None:
    """Create the fake nodes; the status (capacity) is written with the create,
    and again through the status subresource in case a node already existed.

    Several at a time: thousands of nodes one by one take minutes."""
    core = client.CoreV1Api(api)

    def apply(spec: NodeSpec) -> None:
        body = model(client.V1Node, spec.manifest())
        try:
            core.create_node(body)
        except ApiException as err:
            if err.status != 409:
                raise
            core.patch_node(
                spec.name, {"metadata": {"labels": spec.manifest()["metadata"]["labels"]}}
            )
        core.patch_node_status(spec.name, {"status": spec.manifest()["status"]})

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done in pool.map(apply, nodes):
            assert done is None


def node_is_ready(node: client.V1Node) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


# The node lifecycle's taints: a node is created with `not-ready` (the NodeTaint
# admission plugin) and keeps it until kube-controller-manager sees it Ready.
LIFECYCLE_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


def ready_node_names(nodes: dict[str, Any]) -> set[str]:
    """The nodes of a NodeList (plain JSON: thousands of nodes would take seconds
    per poll to turn into client models) that are Ready and no longer carry the
    lifecycle taints. At 5,000 nodes the controller lifts the creation taint minutes
    after kwok marks a node Ready; a pod can go nowhere else than such a node meanwhile."""
    return {
        item["metadata"]["name"]
        for item in nodes.get("items") or []
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (item.get("status") or {}).get("conditions") or []
        )
        and not any(
            t.get("key") in LIFECYCLE_TAINTS for t in (item.get("spec") or {}).get("taints") or []
        )
    }


def wait_nodes_ready(api: client.ApiClient, names: Iterable[str], timeout_s: float = 60.0) -> None:
    core = client.CoreV1Api(api)
    wanted = set(names)

    def all_ready() -> bool:
        resp: Any = core.list_node(_preload_content=False)  # the raw response
        return wanted <= ready_node_names(json.loads(resp.data))

    shown = sorted(wanted) if len(wanted) <= 10 else f"{len(wanted)} nodes"
    # Listing thousands of nodes is work for the apiserver too: poll them less often.
    interval_s = 0.25 if len(wanted) <= 100 else 1.0
    wait_for(f"nodes {shown} to be Ready and untainted", all_ready, timeout_s, interval_s)


def pods_of(api: client.ApiClient, namespace: str, selector: str) -> list[client.V1Pod]:
    items: list[client.V1Pod] = (
        client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    )
    return items


def is_bound(pod: client.V1Pod) -> bool:
    return bool(pod.spec and pod.spec.node_name)


def is_deleted(pod: client.V1Pod) -> bool:
    return bool(pod.metadata and pod.metadata.deletion_timestamp)


def node_of(pod: client.V1Pod) -> str:
    return (pod.spec.node_name if pod.spec else None) or ""


def wait_pods_bound(
    api: client.ApiClient, namespace: str, selector: str, count: int, timeout_s: float = 60.0
) -> list[client.V1Pod]:
    """Wait until `count` live pods matching selector have a node; return them."""

    def bound() -> list[client.V1Pod] | None:
        pods = [p for p in pods_of(api, namespace, selector) if is_bound(p) and not is_deleted(p)]
        return pods if len(pods) >= count else None

    return wait_for(f"{count} pod(s) {selector!r} bound", bound, timeout_s)


def pod_events(api: client.ApiClient, namespace: str, pod_name: str) -> list[client.CoreV1Event]:
    """Events about one pod, oldest first (core/v1 events, as `kubectl describe`)."""
    events: list[client.CoreV1Event] = (
        client.CoreV1Api(api)
        .list_namespaced_event(
            namespace, field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod_name}"
        )
        .items
    )

    def when(event: client.CoreV1Event) -> datetime:
        created = event.metadata.creation_timestamp if event.metadata else None
        return (
            event.last_timestamp or event.event_time or created or datetime.min.replace(tzinfo=UTC)
        )

    return sorted(events, key=when)


def ensure_namespace(api: client.ApiClient, name: str) -> None:
    """Create a namespace unless it exists (without waiting for its ServiceAccount)."""
    try:
        client.CoreV1Api(api).create_namespace(
            model(client.V1Namespace, {"metadata": {"name": name}})
        )
    except client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise


def create_namespace(api: client.ApiClient, name: str) -> None:
    client.CoreV1Api(api).create_namespace(model(client.V1Namespace, {"metadata": {"name": name}}))
    # Pods are refused until the controller manager has made the namespace's
    # default ServiceAccount.
    wait_for(
        f"ServiceAccount default/{name}",
        lambda: client.CoreV1Api(api).read_namespaced_service_account("default", name),
        timeout_s=30,
    )


def create_deployment(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> None:
    client.AppsV1Api(api).create_namespaced_deployment(
        namespace, model(client.V1Deployment, manifest)
    )
