"""A kubelet may not set its own node's tier label (manifests/placement/node-tier).

On the devcluster's real apiserver, which `devcluster up` gives the shipped policy:
requests made as kubelets (system:node:<name> in system:nodes, by impersonation, with
the node rules bound as kubelets hold them) are refused when they register a Node with
`cloud4iot.io/tier` or change or remove it; other labels and an admin's changes pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes.aio.client import ApiClient, CoreV1Api, RbacAuthorizationV1Api
from kubernetes.aio.client.configuration import Configuration
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config import load_kube_config

from cloud4iot.vocabulary import GATEWAY_LABEL, TIER_LABEL
from tests.gateway_monitor.node_tokens import (
    NAMESPACE,
    SERVICE_ACCOUNT,
    admin_client,
    install_monitor_identity,
    monitor_pod,
)
from tests.waiting import eventually

pytestmark = pytest.mark.cluster

NODE, ROGUE = "tier-test-node", "tier-test-rogue"
BINDING = "tier-test-kubelets"


@pytest.fixture
async def admin(devcluster: Any) -> AsyncIterator[ApiClient]:
    async with admin_client(devcluster.kubeconfig) as client:
        yield client


async def as_kubelet(kubeconfig: Any, node: str) -> ApiClient:
    config = type.__call__(Configuration)
    await load_kube_config(
        config_file=str(kubeconfig), client_configuration=config, persist_config=False
    )
    client = ApiClient(config)
    client.set_default_header("Impersonate-User", f"system:node:{node}")
    client.set_default_header("Impersonate-Group", "system:nodes")
    return client


def node_body(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


async def delete_node(core: CoreV1Api, name: str) -> None:
    try:
        await core.delete_node(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


async def refused(attempt: Any) -> str:
    with pytest.raises(ApiException) as denied:
        await attempt
    assert denied.value.status == 403, denied.value.body
    body = str(denied.value.body)
    assert "cloud4iot-node-tier" in body, body  # the policy, not the authorizer
    return body


async def test_a_kubelet_cannot_set_its_own_tier_but_an_admin_can(
    admin: ApiClient, devcluster: Any
) -> None:
    core = CoreV1Api(admin)
    rbac = RbacAuthorizationV1Api(admin)
    try:  # what kubelets are granted on nodes (bootstrap ClusterRole system:node)
        await rbac.create_cluster_role_binding(
            {
                "metadata": {"name": BINDING},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:node",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Group",
                        "name": "system:nodes",
                    }
                ],
            }
        )
    except ApiException as exc:
        if exc.status != 409:
            raise
    for name in (NODE, ROGUE):
        await delete_node(core, name)
    await core.create_node(node_body(NODE, {TIER_LABEL: "cloud"}))
    kubelet = CoreV1Api(await as_kubelet(devcluster.kubeconfig, NODE))
    rogue = CoreV1Api(await as_kubelet(devcluster.kubeconfig, ROGUE))
    try:

        async def may_label() -> bool:  # the RBAC authorizer's cache catches up
            try:
                await kubelet.patch_node(NODE, {"metadata": {"labels": {"example.com/rack": "r1"}}})
            except ApiException as exc:
                if exc.status == 403 and "cloud4iot-node-tier" not in str(exc.body):
                    return False
                raise
            return True

        await eventually(may_label, what="the kubelet's node RBAC")
        # The cloud node calls itself edge (confidential pods could then land on it) ...
        said = await refused(
            kubelet.patch_node(NODE, {"metadata": {"labels": {TIER_LABEL: "edge"}}})
        )
        assert "may not change the cloud4iot.io/tier label" in said
        # ... or drops the label ...
        await refused(kubelet.patch_node(NODE, {"metadata": {"labels": {TIER_LABEL: None}}}))
        # ... or does either through the status subresource, which keeps metadata
        # changes (found in review, 2026-12-07: the policy matched `nodes` only) ...
        await refused(
            kubelet.patch_node_status(NODE, {"metadata": {"labels": {TIER_LABEL: "edge"}}})
        )
        await refused(kubelet.patch_node_status(NODE, {"metadata": {"labels": {TIER_LABEL: None}}}))
        # ... or registers a new Node with it.
        said = await refused(rogue.create_node(node_body(ROGUE, {TIER_LABEL: "gateway"})))
        assert "may not register its node with" in said
        assert (await core.read_node(NODE)).metadata.labels[TIER_LABEL] == "cloud"
        # Other labels are the kubelet's to set, and a Node registered without the tier.
        assert (await core.read_node(NODE)).metadata.labels["example.com/rack"] == "r1"
        await rogue.create_node(node_body(ROGUE, {"example.com/rack": "r2"}))
        # The admin labels nodes.
        await core.patch_node(NODE, {"metadata": {"labels": {TIER_LABEL: "edge"}}})
        assert (await core.read_node(NODE)).metadata.labels[TIER_LABEL] == "edge"
        await core.patch_node(ROGUE, {"metadata": {"labels": {TIER_LABEL: "cloud"}}})
    finally:
        for name in (NODE, ROGUE):
            await delete_node(core, name)
        await rbac.delete_cluster_role_binding(BINDING)
        await kubelet.api_client.close()
        await rogue.api_client.close()


async def test_a_kubelet_cannot_make_its_node_a_gateway_nor_act_for_another_node(
    admin: ApiClient, devcluster: Any
) -> None:
    """Only gateways vote, and each for itself: a kubelet may not give its Node the
    gateway label (NodeRestriction, which the devcluster runs as real clusters do, and
    the node-tier policy again, through the Node and its status), and may not mint a
    monitor token bound to a pod of another node, which would carry that node's claim
    and write its report (found in review, 2026-12-07, with NodeRestriction off)."""
    core = CoreV1Api(admin)
    await install_monitor_identity(admin)
    home, hospital = [
        await monitor_pod(core, n, token_volume=True) for n in ("gw-home", "gw-hospital")
    ]
    kubelet = CoreV1Api(await as_kubelet(devcluster.kubeconfig, "cloud-2"))
    gw_home = CoreV1Api(await as_kubelet(devcluster.kubeconfig, "gw-home"))
    try:
        for attempt in (kubelet.patch_node, kubelet.patch_node_status):
            with pytest.raises(ApiException) as denied:
                await attempt("cloud-2", {"metadata": {"labels": {GATEWAY_LABEL: "true"}}})
            assert denied.value.status == 403, denied.value.body
        assert GATEWAY_LABEL not in ((await core.read_node("cloud-2")).metadata.labels or {})

        uids = {
            p: (await core.read_namespaced_pod(p, NAMESPACE)).metadata.uid for p in (home, hospital)
        }

        def request(pod: str) -> dict[str, Any]:
            ref = {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uids[pod]}
            return {"spec": {"audiences": [], "expirationSeconds": 600, "boundObjectRef": ref}}

        last: list[str] = []

        async def own_pod_token() -> bool:  # the Node authorizer's graph learns the pods
            try:
                await gw_home.create_namespaced_service_account_token(
                    SERVICE_ACCOUNT, NAMESPACE, request(home)
                )
            except ApiException as exc:
                if exc.status == 403:
                    last[:] = [str(exc.body)]
                    return False
                raise
            return True

        try:
            await eventually(own_pod_token, what="gw-home's kubelet minting for its own pod")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {last}") from None
        with pytest.raises(ApiException) as denied:
            await gw_home.create_namespaced_service_account_token(
                SERVICE_ACCOUNT, NAMESPACE, request(hospital)
            )
        assert denied.value.status == 403, denied.value.body
        assert "different node" in str(denied.value.body), denied.value.body
    finally:
        for pod in (home, hospital):
            await core.delete_namespaced_pod(pod, NAMESPACE, grace_period_seconds=0)
        await kubelet.api_client.close()
        await gw_home.api_client.close()
