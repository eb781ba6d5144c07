"""Gateway monitor identities as the apiserver sees them: tokens bound to pods on nodes.

Each "monitor" is a pod object of the shipped ServiceAccount bound to a kwok node
(nothing runs); a TokenRequest bound to that pod carries the node's name in the
caller's extra info, exactly like the projected token kubelet mounts into the
DaemonSet's pod. Clients built here hold only that bearer token.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes.aio.client import (
    ApiClient,
    AuthenticationV1Api,
    Configuration,
    CoreV1Api,
    RbacAuthorizationV1Api,
)
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config import load_kube_config

from tests.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests" / "gateway-monitor"
NAMESPACE = "cloud4iot-gateway"
SERVICE_ACCOUNT = "cloud4iot-gateway-monitor"
NODE_KEY = "authentication.kubernetes.io/node-name"


async def install_monitor_identity(admin: ApiClient) -> None:
    """Namespace, ServiceAccount, roles and bindings exactly as shipped."""
    core, rbac = CoreV1Api(admin), RbacAuthorizationV1Api(admin)
    create = {
        "Namespace": lambda d: core.create_namespace(d),
        "ServiceAccount": lambda d: core.create_namespaced_service_account(NAMESPACE, d),
        "ClusterRole": lambda d: rbac.create_cluster_role(d),
        "ClusterRoleBinding": lambda d: rbac.create_cluster_role_binding(d),
        "Role": lambda d: rbac.create_namespaced_role(NAMESPACE, d),
        "RoleBinding": lambda d: rbac.create_namespaced_role_binding(NAMESPACE, d),
    }
    replace = {
        "ClusterRole": lambda d: rbac.replace_cluster_role(d["metadata"]["name"], d),
        "Role": lambda d: rbac.replace_namespaced_role(d["metadata"]["name"], NAMESPACE, d),
    }
    for name in ("namespace.yaml", "rbac.yaml"):
        for doc in yaml.safe_load_all((MANIFESTS / name).read_text()):
            try:
                await create[doc["kind"]](doc)
            except ApiException as exc:
                if exc.status != 409:  # made by another test of this run
                    raise
                if doc["kind"] in replace:  # keep the rules exactly as shipped
                    await replace[doc["kind"]](doc)


async def monitor_pod(core: CoreV1Api, node: str, token_volume: bool = False) -> str:
    """A monitor pod object bound to `node` (kwok "runs" it; nothing executes); with
    `token_volume`, the projected token volume a kubelet mints for (the apiserver lets a
    kubelet request only the audiences its pods' volumes name)."""
    name = f"monitor-{node}-{uuid.uuid4().hex[:6]}"
    source = {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}
    volumes = [{"name": "token", "projected": {"sources": [source]}}] if token_volume else []
    await core.create_namespaced_pod(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": SERVICE_ACCOUNT}},
            "spec": {
                "nodeName": node,
                "serviceAccountName": SERVICE_ACCOUNT,
                "automountServiceAccountToken": False,
                "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "monitor", "image": "cloud4iot/gateway-monitor:0.1.0"}],
                "volumes": volumes,
            },
        },
    )
    return name


async def token(core: CoreV1Api, pod: str | None) -> str:
    """A TokenRequest of the monitors' ServiceAccount, bound to `pod` (None: unbound)."""
    spec: dict[str, Any] = {"audiences": [], "expirationSeconds": 600}
    if pod is not None:
        spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": pod}
    review = await core.create_namespaced_service_account_token(
        SERVICE_ACCOUNT,
        NAMESPACE,
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
    )
    value: str = review.status.token
    return value


def bearer_client(admin: ApiClient, bearer: str) -> ApiClient:
    """Same apiserver and CA as the admin kubeconfig, but only the bearer token."""
    base = admin.configuration
    config = type.__call__(Configuration)
    config.host = base.host
    config.ssl_ca_cert = base.ssl_ca_cert
    config.verify_ssl = base.verify_ssl
    config.api_key = {"BearerToken": bearer}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    return ApiClient(config)


async def whoami(client: ApiClient) -> dict[str, Any]:
    """The identity the apiserver sees; retried while a new pod may not be in the
    token authenticator's cache yet (401)."""
    found: dict[str, Any] = {}

    async def review() -> bool:
        try:
            answer = await AuthenticationV1Api(client).create_self_subject_review(
                {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
            )
        except ApiException as exc:
            if exc.status == 401:
                return False
            raise
        user = answer.status.user_info
        found.update(username=user.username, extra=user.extra or {})
        return True

    await eventually(review, what="the token to authenticate")
    return found


@asynccontextmanager
async def admin_client(kubeconfig: Path | str) -> AsyncIterator[ApiClient]:
    """An aio client with the devcluster's admin kubeconfig."""
    config = type.__call__(Configuration)
    await load_kube_config(
        config_file=str(kubeconfig), client_configuration=config, persist_config=False
    )
    client = ApiClient(config)
    try:
        yield client
    finally:
        await client.close()


@dataclass
class NodeClients:
    clients: dict[str, ApiClient]  # node (or UNBOUND) -> a client holding only its token
    users: dict[str, dict[str, Any]]  # ... -> the identity the apiserver sees (whoami)


UNBOUND = "unbound"


@asynccontextmanager
async def node_bound_clients(
    admin: ApiClient, nodes: Iterable[str], *, unbound: bool = False
) -> AsyncIterator[NodeClients]:
    """The monitors' identity as shipped, then per node a monitor pod bound to it and a
    client holding only a token bound to that pod (`unbound`: one more, bound to
    nothing, under UNBOUND); each authenticated before yielding. Closed and the pods
    deleted afterwards."""
    await install_monitor_identity(admin)
    core = CoreV1Api(admin)
    pods = {node: await monitor_pod(core, node) for node in nodes}
    clients = {node: bearer_client(admin, await token(core, pod)) for node, pod in pods.items()}
    if unbound:
        clients[UNBOUND] = bearer_client(admin, await token(core, None))
    try:
        users = {key: await whoami(c) for key, c in clients.items()}
        yield NodeClients(clients, users)
    finally:
        for c in clients.values():
            await c.close()
        for pod in pods.values():
            await core.delete_namespaced_pod(pod, NAMESPACE, grace_period_seconds=0)
