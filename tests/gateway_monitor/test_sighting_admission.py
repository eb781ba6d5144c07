"""The apiserver lets a gateway monitor write only its own sighting (issue 12, items 1 and 2).

The devcluster installs manifests/gateway-monitor/admission/sighting-admission.yaml at `up`. Here the
monitors' ServiceAccount and RBAC come from the shipped manifests; each "monitor" is a pod
object bound to its kwok gateway node and acts with a token bound to that pod (what kubelet
mounts into the DaemonSet's pod), so the apiserver itself puts the node into the identity.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.aio.client import (
    ApiClient,
    AuthenticationV1Api,
    Configuration,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
)
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config import load_kube_config

from cloud4iot.devices import (
    EXTENDER_FIELD_MANAGER,
    GROUP,
    PLURAL,
    VERSION,
    gateway_field_manager,
    rfc3339,
)
from gateway_monitor.publisher import APPLY_PATCH, Sighting, apply_sighting
from tests.waiting import eventually

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests" / "gateway-monitor"
NAMESPACE = "cloud4iot-gateway"
SERVICE_ACCOUNT = "cloud4iot-gateway-monitor"
NODE_KEY = "authentication.kubernetes.io/node-name"
POLICY = "cloud4iot-gateway-sightings"
HOME, HOSPITAL, CLOUD = "gw-home", "gw-hospital", "cloud-1"
CRD = yaml.safe_load((REPO / "manifests/crd/devices.cloud4iot.io.yaml").read_text())
MAX_SIGHTINGS: int = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
    "status"
]["properties"]["sightings"]["maxItems"]


@dataclass
class Monitors:
    home: CustomObjectsApi  # token bound to a pod on gw-home
    hospital: CustomObjectsApi  # token bound to a pod on gw-hospital
    unbound: CustomObjectsApi  # the same ServiceAccount, token bound to nothing
    users: dict[str, dict[str, Any]]  # SelfSubjectReview's userInfo per client


@pytest.fixture
async def admin(devcluster: Any) -> AsyncIterator[ApiClient]:
    config = type.__call__(Configuration)
    await load_kube_config(
        config_file=str(devcluster.kubeconfig), client_configuration=config, persist_config=False
    )
    client = ApiClient(config)
    yield client
    await client.close()


async def install_monitor_identity(admin: ApiClient) -> None:
    """Namespace, ServiceAccount, ClusterRole and binding exactly as shipped."""
    core, rbac = CoreV1Api(admin), RbacAuthorizationV1Api(admin)
    create = {
        "Namespace": lambda d: core.create_namespace(d),
        "ServiceAccount": lambda d: core.create_namespaced_service_account(NAMESPACE, d),
        "ClusterRole": lambda d: rbac.create_cluster_role(d),
        "ClusterRoleBinding": lambda d: rbac.create_cluster_role_binding(d),
    }
    for name in ("namespace.yaml", "rbac.yaml"):
        for doc in yaml.safe_load_all((MANIFESTS / name).read_text()):
            try:
                await create[doc["kind"]](doc)
            except ApiException as exc:
                if exc.status != 409:  # made by another test of this run
                    raise


async def monitor_pod(core: CoreV1Api, node: str) -> str:
    """A monitor pod object bound to `node` (kwok "runs" it; nothing executes)."""
    name = f"monitor-{node}-{uuid.uuid4().hex[:6]}"
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
            },
        },
    )
    return name


async def token(core: CoreV1Api, pod: str | None) -> str:
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


@pytest.fixture
async def monitors(admin: ApiClient) -> AsyncIterator[Monitors]:
    await install_monitor_identity(admin)
    core = CoreV1Api(admin)
    pods = {node: await monitor_pod(core, node) for node in (HOME, HOSPITAL)}
    clients = {
        HOME: bearer_client(admin, await token(core, pods[HOME])),
        HOSPITAL: bearer_client(admin, await token(core, pods[HOSPITAL])),
        "unbound": bearer_client(admin, await token(core, None)),
    }
    try:
        users = {key: await whoami(c) for key, c in clients.items()}

        async def rbac_ready() -> bool:  # the RBAC authorizer's cache catches up
            try:
                await CustomObjectsApi(clients[HOME]).list_cluster_custom_object(
                    GROUP, VERSION, PLURAL
                )
            except ApiException as exc:
                if exc.status == 403:
                    return False
                raise
            return True

        await eventually(rbac_ready, what="the monitors' RBAC")
        yield Monitors(
            home=CustomObjectsApi(clients[HOME]),
            hospital=CustomObjectsApi(clients[HOSPITAL]),
            unbound=CustomObjectsApi(clients["unbound"]),
            users=users,
        )
    finally:
        for c in clients.values():
            await c.close()
        for pod in pods.values():
            await core.delete_namespaced_pod(pod, NAMESPACE, grace_period_seconds=0)


@pytest.fixture
async def device(admin: ApiClient) -> AsyncIterator[str]:
    api = CustomObjectsApi(admin)
    name = f"patient-{uuid.uuid4().hex[:8]}"
    address = "C0:" + ":".join(f"{b:02X}" for b in uuid.uuid4().bytes[:5])
    await api.create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Device",
            "metadata": {"name": name},
            "spec": {"address": address},
        },
    )
    yield name
    await api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


async def status_of(admin: ApiClient, name: str) -> dict[str, Any]:
    obj = await CustomObjectsApi(admin).get_cluster_custom_object_status(
        GROUP, VERSION, PLURAL, name
    )
    status: dict[str, Any] = obj.get("status") or {}
    return status


async def sightings(admin: ApiClient, name: str) -> dict[str, dict[str, Any]]:
    return {e["node"]: e for e in (await status_of(admin, name)).get("sightings") or []}


async def apply_status(
    api: CustomObjectsApi, name: str, manager: str, status: dict[str, Any], force: bool = True
) -> None:
    await api.patch_cluster_custom_object_status(
        GROUP,
        VERSION,
        PLURAL,
        name,
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Device", "metadata": {"name": name}}
        | {"status": status},
        field_manager=manager,
        force=force,
        _content_type=APPLY_PATCH,
    )


async def merge_status(api: CustomObjectsApi, name: str, status: dict[str, Any]) -> None:
    await api.patch_cluster_custom_object_status(
        GROUP,
        VERSION,
        PLURAL,
        name,
        {"status": status},
        _content_type="application/merge-patch+json",
    )


def entry(node: str, rssi: int, at: float | None = None) -> dict[str, Any]:
    return {"node": node, "rssi": rssi, "lastSeen": rfc3339(time.time() if at is None else at)}


async def refused(attempt: Any, because: str) -> None:
    """The request is refused by our policy (not RBAC, not the schema), for `because`."""
    with pytest.raises(ApiException) as denied:
        await attempt
    body = denied.value.body or ""
    assert denied.value.status == 403, body
    assert f"ValidatingAdmissionPolicy '{POLICY}'" in body, body
    assert because in body, body


async def test_pod_bound_tokens_carry_their_node_and_the_unbound_one_none(
    monitors: Monitors,
) -> None:
    username = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    assert {u["username"] for u in monitors.users.values()} == {username}
    assert monitors.users[HOME]["extra"][NODE_KEY] == [HOME]
    assert monitors.users[HOSPITAL]["extra"][NODE_KEY] == [HOSPITAL]
    assert NODE_KEY not in monitors.users["unbound"]["extra"]


async def test_own_sighting_is_applied_and_removed(
    monitors: Monitors, device: str, admin: ApiClient
) -> None:
    await apply_sighting(monitors.home, device, HOME, Sighting(-60, time.time()))
    await apply_sighting(monitors.hospital, device, HOSPITAL, Sighting(-80, time.time()))
    seen = await sightings(admin, device)
    assert {n: e["rssi"] for n, e in seen.items()} == {HOME: -60, HOSPITAL: -80}
    # moving on and going away are the monitor's own business
    await apply_sighting(monitors.home, device, HOME, Sighting(-55, time.time()))
    await apply_sighting(monitors.home, device, HOME, None)
    assert {n: e["rssi"] for n, e in (await sightings(admin, device)).items()} == {HOSPITAL: -80}


async def test_a_gateway_cannot_rewrite_another_gateways_sighting(
    monitors: Monitors, device: str, admin: ApiClient
) -> None:
    await apply_sighting(monitors.hospital, device, HOSPITAL, Sighting(-80, time.time()))
    before = await sightings(admin, device)
    not_own = f"the gateway monitor on node {HOME} may write only its own sighting, not that of {HOSPITAL}"

    # forced apply of B's entry under A's own field manager
    forged = Sighting(-30, time.time())
    await refused(
        apply_status(
            monitors.home,
            device,
            gateway_field_manager(HOME),
            {"sightings": [entry(HOSPITAL, -30)]},
        ),
        not_own,
    )
    # apply under B's field manager, both of B's entry and of a plain removal of it
    await refused(apply_sighting(monitors.home, device, HOSPITAL, forged), not_own)
    await refused(
        apply_sighting(monitors.home, device, HOSPITAL, None),
        f"the gateway monitor on node {HOME} may not change or remove the sighting of {HOSPITAL}",
    )
    # a merge patch replacing the whole list
    await refused(
        merge_status(monitors.home, device, {"sightings": [entry(HOSPITAL, -30)]}), not_own
    )
    assert await sightings(admin, device) == before


async def test_a_gateway_cannot_delete_another_gateways_sighting(
    monitors: Monitors, device: str, admin: ApiClient
) -> None:
    await apply_sighting(monitors.hospital, device, HOSPITAL, Sighting(-80, time.time()))
    await apply_sighting(monitors.home, device, HOME, Sighting(-60, time.time()))
    before = await sightings(admin, device)
    assert set(before) == {HOME, HOSPITAL}
    gone = f"the gateway monitor on node {HOME} may not change or remove the sighting of {HOSPITAL}"
    # a merge patch keeping only its own entry, and one emptying the list
    await refused(merge_status(monitors.home, device, {"sightings": [before[HOME]]}), gone)
    await refused(merge_status(monitors.home, device, {"sightings": None}), gone)
    # an apply under B's manager with A's entry: B's manager would give up B's entry
    await refused(
        apply_status(
            monitors.home, device, gateway_field_manager(HOSPITAL), {"sightings": [before[HOME]]}
        ),
        gone,
    )
    assert await sightings(admin, device) == before


async def test_a_gateway_cannot_add_a_sighting_for_another_node(
    monitors: Monitors, device: str, admin: ApiClient
) -> None:
    # Under its own field manager, beside its own entry, or alone (a cloud node).
    for entries in ([entry(HOME, -60), entry(CLOUD, -40)], [entry(CLOUD, -40)]):
        await refused(
            apply_status(
                monitors.home, device, gateway_field_manager(HOME), {"sightings": entries}
            ),
            f"the gateway monitor on node {HOME} may write only its own sighting, not that of {CLOUD}",
        )
    await refused(
        apply_sighting(monitors.home, device, CLOUD, Sighting(-40, time.time())),
        f"may write only its own sighting, not that of {CLOUD}",
    )
    assert await sightings(admin, device) == {}


async def test_a_gateway_cannot_touch_status_nearest(
    monitors: Monitors, device: str, admin: ApiClient
) -> None:
    message = "status.nearest is decided by the extender"
    nearest = {"node": HOME, "rssi": -60, "lastSeen": rfc3339(time.time())}
    # setting it where there was none
    await refused(
        apply_status(monitors.home, device, gateway_field_manager(HOME), {"nearest": nearest}),
        message,
    )
    # changing or clearing the extender's decision
    decided = {"node": HOSPITAL, "rssi": -70, "lastSeen": rfc3339(time.time())}
    await apply_status(
        CustomObjectsApi(admin), device, EXTENDER_FIELD_MANAGER, {"nearest": decided}
    )
    await refused(merge_status(monitors.home, device, {"nearest": nearest}), message)
    await refused(merge_status(monitors.home, device, {"nearest": None}), message)
    await refused(
        apply_status(
            monitors.home,
            device,
            gateway_field_manager(HOME),
            {"sightings": [entry(HOME, -60)], "nearest": nearest},
        ),
        message,
    )
    status = await status_of(admin, device)
    assert status["nearest"] == decided
    assert not status.get("sightings")


async def test_a_token_without_a_node_may_write_nothing(
    monitors: Monitors, device: str, admin: ApiClient
) -> None:
    no_node = "no node association found for the gateway monitor"
    await refused(
        apply_sighting(monitors.unbound, device, HOME, Sighting(-60, time.time())), no_node
    )
    await refused(apply_sighting(monitors.unbound, device, HOME, None), no_node)
    await refused(
        merge_status(monitors.unbound, device, {"sightings": [entry(HOME, -60)]}), no_node
    )
    await refused(merge_status(monitors.unbound, device, {"nearest": {"node": HOME}}), no_node)
    assert await status_of(admin, device) == {}


async def test_deleting_or_creating_devices_is_left_to_rbac_which_refuses_it(
    monitors: Monitors, device: str, admin: ApiClient
) -> None:
    """A DELETE has no status for the policy to judge: the monitors hold no such verb."""
    forged = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Device",
        "metadata": {"name": f"{device}-forged"},
        "spec": {"address": "C0:00:00:00:00:01"},
    }
    attempts = (
        lambda: monitors.home.delete_cluster_custom_object(GROUP, VERSION, PLURAL, device),
        lambda: monitors.home.create_cluster_custom_object(GROUP, VERSION, PLURAL, forged),
    )
    for attempt in attempts:
        with pytest.raises(ApiException) as denied:
            await attempt()
        assert denied.value.status == 403
        assert "ValidatingAdmissionPolicy" not in (denied.value.body or "")
        assert "cannot" in (denied.value.body or "")
    assert await status_of(admin, device) == {}


async def test_a_forger_cannot_fill_the_list_and_a_full_one_never_blocks_a_gateway(
    monitors: Monitors, device: str, admin: ApiClient
) -> None:
    # The old attack: one gateway fills every slot so the real gateway's apply gets 422.
    fake = [entry(f"gw-fake-{i}", -90) for i in range(MAX_SIGHTINGS)]
    await refused(
        apply_status(monitors.home, device, gateway_field_manager(HOME), {"sightings": fake}),
        f"the gateway monitor on node {HOME} may write only its own sighting, not that of gw-fake-0",
    )
    await refused(merge_status(monitors.home, device, {"sightings": fake}), "gw-fake-0")
    assert await sightings(admin, device) == {}

    # Every other slot held by a distinct gateway (only real gateways can hold one now;
    # the admin writes them here): the last gateway's own apply still fits, and the
    # policy's entry-by-entry comparison stays within its cost budget at the cap.
    others = [entry(f"gw-ward-{i}", -85) for i in range(MAX_SIGHTINGS - 1)]
    await merge_status(CustomObjectsApi(admin), device, {"sightings": others})
    await apply_sighting(monitors.home, device, HOME, Sighting(-58, time.time()))
    seen = await sightings(admin, device)
    assert len(seen) == MAX_SIGHTINGS
    assert seen[HOME]["rssi"] == -58
    # ... and a gateway updates and removes its entry in a full list
    await apply_sighting(monitors.home, device, HOME, Sighting(-52, time.time()))
    assert (await sightings(admin, device))[HOME]["rssi"] == -52
    await apply_sighting(monitors.home, device, HOME, None)
    seen = await sightings(admin, device)
    assert HOME not in seen
    assert len(seen) == MAX_SIGHTINGS - 1


async def test_the_schema_bounds_last_seen_to_an_rfc3339_time(
    monitors: Monitors, device: str
) -> None:
    """A future lastSeen passes (no clock in admission; the extender caps it when it reads);
    anything that is not a date-time is refused by the CRD's schema."""
    await apply_sighting(monitors.home, device, HOME, Sighting(-60, time.time() + 365 * 86400))
    with pytest.raises(ApiException) as invalid:
        await apply_status(
            monitors.home,
            device,
            gateway_field_manager(HOME),
            {"sightings": [{"node": HOME, "rssi": -60, "lastSeen": "next year"}]},
        )
    assert invalid.value.status == 422
    assert "lastSeen" in (invalid.value.body or "")
