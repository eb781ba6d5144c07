"""A gateway monitor renews only its own liveness Lease (docs/gateway-writes.md, section 2).

Real node-bound tokens (TokenRequests bound to pods of the shipped ServiceAccount on
kwok nodes, as kubelet mounts them), the shipped RBAC and the policy
cloud4iot-gateway-leases that the devcluster installs with the report policy. The
renewals go through the monitor's own ``LeaseRenewer``; the attacks are refused by the
apiserver and the victim's own renewals go on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes.aio.client import ApiClient, CoordinationV1Api
from kubernetes.aio.client.exceptions import ApiException

from gateway_monitor.lease import LeaseConfig, LeaseRenewer, lease_body
from tests.gateway_monitor.node_tokens import (
    NAMESPACE,
    UNBOUND,
    admin_client,
    install_monitor_identity,
    node_bound_clients,
)
from tests.waiting import eventually

pytestmark = pytest.mark.cluster

POLICY = "cloud4iot-gateway-leases"
HOME, HOSPITAL, CLOUD = "gw-home", "gw-hospital", "cloud-1"
CONFIG = LeaseConfig(renew=10.0, duration=40, retry=2.0)


@dataclass
class Monitors:
    home: CoordinationV1Api
    hospital: CoordinationV1Api
    cloud: CoordinationV1Api  # a pod of the monitors' ServiceAccount on a non-gateway
    unbound: CoordinationV1Api  # the same ServiceAccount, token bound to nothing


@pytest.fixture
async def admin(devcluster: Any) -> AsyncIterator[ApiClient]:
    async with admin_client(devcluster.kubeconfig) as client:
        yield client


@pytest.fixture
async def monitors(admin: ApiClient) -> AsyncIterator[Monitors]:
    await install_monitor_identity(admin)
    coordination = CoordinationV1Api(admin)
    for node in (HOME, HOSPITAL, CLOUD):
        try:
            await coordination.delete_namespaced_lease(node, NAMESPACE)
        except ApiException as exc:
            if exc.status != 404:
                raise
    async with node_bound_clients(admin, (HOME, HOSPITAL, CLOUD), unbound=True) as ids:
        clients = ids.clients

        async def rbac_ready() -> bool:  # the RBAC authorizer's cache catches up
            try:
                await CoordinationV1Api(clients[HOME]).read_namespaced_lease(HOME, NAMESPACE)
            except ApiException as exc:
                if exc.status == 403:
                    return False
                if exc.status == 404:
                    return True
                raise
            return True

        await eventually(rbac_ready, what="the monitors' lease RBAC")
        yield Monitors(*(CoordinationV1Api(clients[k]) for k in (HOME, HOSPITAL, CLOUD, UNBOUND)))


async def refused(attempt: Any, because: str, status: int = 403) -> str:
    with pytest.raises(ApiException) as denied:
        await attempt
    text = denied.value.body or ""
    assert denied.value.status == status, text
    if "cannot" not in because:
        assert f"ValidatingAdmissionPolicy '{POLICY}'" in text, text
    assert because in text, text
    return text


async def renew_time(admin: ApiClient, node: str) -> str:
    lease = await CoordinationV1Api(admin).read_namespaced_lease(node, NAMESPACE)
    assert lease.spec.holder_identity == node
    assert lease.spec.lease_duration_seconds == CONFIG.duration
    return str(lease.spec.renew_time)


def not_own(caller: str, target: str) -> str:
    return (
        f"the gateway monitor on node {caller} may write only the Lease "
        f"{NAMESPACE}/{caller}, not {NAMESPACE}/{target}"
    )


async def test_a_monitor_creates_and_renews_its_own_lease(
    monitors: Monitors, admin: ApiClient
) -> None:
    clock = [time.time()]
    renewer = LeaseRenewer(monitors.home, HOME, NAMESPACE, CONFIG, wall=lambda: clock[0])
    assert await renewer.renew()  # created
    first = await renew_time(admin, HOME)
    clock[0] += 10.0
    assert await renewer.renew()  # updated
    assert await renew_time(admin, HOME) != first
    assert renewer.renewals == 2
    assert renewer.failures == 0
    # a new renewer (the monitor restarted) adopts the Lease that exists
    again = LeaseRenewer(monitors.home, HOME, NAMESPACE, CONFIG, wall=lambda: clock[0] + 10)
    assert await again.renew()


async def test_a_monitor_cannot_create_or_renew_another_gateways_lease(
    monitors: Monitors, admin: ApiClient
) -> None:
    victim = LeaseRenewer(monitors.hospital, HOSPITAL, NAMESPACE, CONFIG)
    # before the victim's Lease exists: creating it for the victim is refused
    await refused(
        monitors.home.create_namespaced_lease(
            NAMESPACE, lease_body(HOSPITAL, NAMESPACE, time.time(), CONFIG.duration)
        ),
        not_own(HOME, HOSPITAL),
    )
    assert await victim.renew()
    before = await renew_time(admin, HOSPITAL)
    current = await monitors.hospital.read_namespaced_lease(HOSPITAL, NAMESPACE)
    version = current.metadata.resource_version
    later = time.time() + 30
    # renewing it (the monitor's own renewer pointed at the victim's name): refused
    attacker = LeaseRenewer(monitors.home, HOSPITAL, NAMESPACE, CONFIG, wall=lambda: later)
    assert not await attacker.renew()
    await refused(
        monitors.home.replace_namespaced_lease(
            HOSPITAL, NAMESPACE, lease_body(HOSPITAL, NAMESPACE, later, CONFIG.duration, version)
        ),
        not_own(HOME, HOSPITAL),
    )
    # holding its own Lease under another holder: refused
    await refused(
        monitors.home.create_namespaced_lease(
            NAMESPACE,
            lease_body(HOME, NAMESPACE, later, CONFIG.duration)
            | {"spec": {"holderIdentity": HOSPITAL, "leaseDurationSeconds": 40}},
        ),
        f"the Lease of node {HOME} must be held by {HOME}",
    )
    # a pod of the same ServiceAccount on a non-gateway node, and an unbound token
    await refused(
        monitors.cloud.replace_namespaced_lease(
            HOSPITAL, NAMESPACE, lease_body(HOSPITAL, NAMESPACE, later, CONFIG.duration, version)
        ),
        not_own(CLOUD, HOSPITAL),
    )
    await refused(
        monitors.unbound.replace_namespaced_lease(
            HOSPITAL, NAMESPACE, lease_body(HOSPITAL, NAMESPACE, later, CONFIG.duration, version)
        ),
        "no node association found for the gateway monitor",
    )
    # deleting it: RBAC refuses (no delete verb)
    await refused(monitors.home.delete_namespaced_lease(HOSPITAL, NAMESPACE), "cannot delete")
    # nothing of that reached the victim's Lease, and the victim renews on
    assert await renew_time(admin, HOSPITAL) == before
    assert await victim.renew()
    assert await renew_time(admin, HOSPITAL) != before


async def test_a_monitor_cannot_write_a_lease_in_another_namespace(monitors: Monitors) -> None:
    await refused(
        monitors.home.create_namespaced_lease(
            "kube-node-lease", lease_body(HOME, "kube-node-lease", time.time(), 40)
        ),
        "cannot create resource",
    )
