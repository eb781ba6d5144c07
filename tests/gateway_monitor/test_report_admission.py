"""A gateway monitor writes only its own GatewayReport (issue 24; docs/gateway-writes.md 1).

Replays issue 24's attacks with real node-bound tokens: each "monitor" acts with a
TokenRequest bound to a pod of the shipped ServiceAccount on its kwok node (what kubelet
mounts into the DaemonSet's pod), under the shipped RBAC and the policy
manifests/gateway-monitor/admission/report-admission.yaml that the devcluster installs.
Every attack is refused AND the victim's own writes, exactly as its publisher sends them
(gateway_monitor.report.write_report), succeed afterwards.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes.aio.client import ApiClient, CustomObjectsApi
from kubernetes.aio.client.exceptions import ApiException

from cloud4iot.devices import (
    API_VERSION,
    APPLY_PATCH,
    GROUP,
    REPORT_KIND,
    REPORT_MAX_SIGHTINGS,
    REPORT_PLURAL,
    VERSION,
    gateway_field_manager,
    rfc3339,
)
from gateway_monitor.report import report_body, write_report
from tests.gateway_monitor.node_tokens import (
    NODE_KEY,
    UNBOUND,
    admin_client,
    install_monitor_identity,
    node_bound_clients,
)
from tests.waiting import eventually

pytestmark = pytest.mark.cluster

POLICY = "cloud4iot-gateway-reports"
HOME, HOSPITAL, CLOUD = "gw-home", "gw-hospital", "cloud-1"


@dataclass
class Monitors:
    home: CustomObjectsApi  # token bound to a pod on gw-home
    hospital: CustomObjectsApi  # token bound to a pod on gw-hospital
    cloud: CustomObjectsApi  # token bound to a pod on cloud-1 (not a gateway)
    unbound: CustomObjectsApi  # the same ServiceAccount, token bound to nothing
    users: dict[str, dict[str, Any]]


@pytest.fixture
async def admin(devcluster: Any) -> AsyncIterator[ApiClient]:
    async with admin_client(devcluster.kubeconfig) as client:
        yield client


async def fresh_report(api: CustomObjectsApi, node: str) -> None:
    """The report of `node` as the controller creates it: a name, no status."""
    try:
        await api.delete_cluster_custom_object(GROUP, VERSION, REPORT_PLURAL, node)
    except ApiException as exc:
        if exc.status != 404:
            raise

    async def created() -> bool:
        try:
            await api.create_cluster_custom_object(
                GROUP,
                VERSION,
                REPORT_PLURAL,
                {"apiVersion": API_VERSION, "kind": REPORT_KIND, "metadata": {"name": node}},
            )
        except ApiException as exc:
            if exc.status != 409:  # still being deleted, or the controller made it
                raise
            obj = await api.get_cluster_custom_object(GROUP, VERSION, REPORT_PLURAL, node)
            return not obj["metadata"].get("deletionTimestamp") and not obj.get("status")
        return True

    await eventually(created, what=f"a fresh report of {node}")


@pytest.fixture
async def monitors(admin: ApiClient) -> AsyncIterator[Monitors]:
    await install_monitor_identity(admin)
    custom = CustomObjectsApi(admin)
    for node in (HOME, HOSPITAL):
        await fresh_report(custom, node)
    async with node_bound_clients(admin, (HOME, HOSPITAL, CLOUD), unbound=True) as ids:
        clients = ids.clients

        async def rbac_ready() -> bool:  # the RBAC authorizer's cache catches up
            try:
                await CustomObjectsApi(clients[HOME]).get_cluster_custom_object_status(
                    GROUP, VERSION, REPORT_PLURAL, HOME
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
            cloud=CustomObjectsApi(clients[CLOUD]),
            unbound=CustomObjectsApi(clients[UNBOUND]),
            users=ids.users,
        )


def body(node: str, heard: dict[str, int], at: float | None = None) -> dict[str, Any]:
    now = time.time() if at is None else at
    return report_body(node, {d: (rssi, now) for d, rssi in heard.items()}, now)


def entry(device: str, rssi: int) -> dict[str, Any]:
    return {"device": device, "rssi": rssi, "lastSeen": rfc3339(time.time())}


async def apply_as(
    api: CustomObjectsApi, name: str, manager: str, status: dict[str, Any], **extra: Any
) -> None:
    """A forced apply of report `name`'s status under any field manager."""
    await api.patch_cluster_custom_object_status(
        GROUP,
        VERSION,
        REPORT_PLURAL,
        name,
        {"apiVersion": API_VERSION, "kind": REPORT_KIND, "metadata": {"name": name}}
        | {"status": status}
        | extra,
        field_manager=manager,
        force=True,
        _content_type=APPLY_PATCH,
    )


async def merge_as(api: CustomObjectsApi, name: str, patch: dict[str, Any]) -> None:
    await api.patch_cluster_custom_object_status(
        GROUP, VERSION, REPORT_PLURAL, name, patch, _content_type="application/merge-patch+json"
    )


async def heard(admin: ApiClient, node: str) -> dict[str, int]:
    obj = await CustomObjectsApi(admin).get_cluster_custom_object(
        GROUP, VERSION, REPORT_PLURAL, node
    )
    return {e["device"]: e["rssi"] for e in (obj.get("status") or {}).get("sightings") or []}


async def refused(attempt: Any, because: str, status: int = 403) -> str:
    """The request is refused (by our policy unless `status` says otherwise)."""
    with pytest.raises(ApiException) as denied:
        await attempt
    text = denied.value.body or ""
    assert denied.value.status == status, text
    if status == 403 and "cannot" not in because:
        assert f"ValidatingAdmissionPolicy '{POLICY}'" in text, text
    assert because in text, text
    return text


def not_own(caller: str, target: str) -> str:
    return f"the gateway monitor on node {caller} may write only the report named {caller}, not {target}"


async def test_pod_bound_tokens_carry_their_node(monitors: Monitors) -> None:
    assert monitors.users[HOME]["extra"][NODE_KEY] == [HOME]
    assert monitors.users[HOSPITAL]["extra"][NODE_KEY] == [HOSPITAL]
    assert monitors.users[CLOUD]["extra"][NODE_KEY] == [CLOUD]
    assert NODE_KEY not in monitors.users["unbound"]["extra"]


async def test_a_gateway_writes_refreshes_and_empties_its_own_report(
    monitors: Monitors, admin: ApiClient
) -> None:
    await write_report(monitors.home, HOME, body(HOME, {"patient-1": -60, "patient-2": -70}))
    assert await heard(admin, HOME) == {"patient-1": -60, "patient-2": -70}
    await write_report(monitors.home, HOME, body(HOME, {"patient-1": -55}))
    assert await heard(admin, HOME) == {"patient-1": -55}
    await write_report(monitors.home, HOME, body(HOME, {}))
    assert await heard(admin, HOME) == {}
    assert await heard(admin, HOSPITAL) == {}


async def test_planting_under_the_victims_manager_is_refused_and_the_victim_stays_in_charge(
    monitors: Monitors, admin: ApiClient
) -> None:
    """Issue 24, hole 1: gw-home applies, forced, the victim's entry verbatim plus its own
    under gw-hospital's field manager; gw-hospital's refresh and departure must go on."""
    await write_report(monitors.hospital, HOSPITAL, body(HOSPITAL, {"patient-1": -50}))
    victim = (
        await CustomObjectsApi(admin).get_cluster_custom_object_status(
            GROUP, VERSION, REPORT_PLURAL, HOSPITAL
        )
    )["status"]["sightings"][0]
    planted = {"sightings": [victim, entry("patient-1", -65) | {"device": "patient-9"}]}
    # into the victim's report, under the victim's manager, forced: refused
    await refused(
        apply_as(monitors.home, HOSPITAL, gateway_field_manager(HOSPITAL), planted),
        not_own(HOME, HOSPITAL),
    )
    # ... by merge patch, and emptying it: refused
    await refused(merge_as(monitors.home, HOSPITAL, {"status": planted}), not_own(HOME, HOSPITAL))
    await refused(
        merge_as(monitors.home, HOSPITAL, {"status": {"sightings": None}}), not_own(HOME, HOSPITAL)
    )
    # the attacker's own report under the victim's manager is its own business: the
    # victim's report is another object and does not change
    await apply_as(monitors.home, HOME, gateway_field_manager(HOSPITAL), planted)
    assert await heard(admin, HOSPITAL) == {"patient-1": -50}
    # the victim refreshes 20 times, as its publisher does, and every apply is accepted
    for rssi in range(-50, -30):
        await write_report(monitors.hospital, HOSPITAL, body(HOSPITAL, {"patient-1": rssi}))
    assert await heard(admin, HOSPITAL) == {"patient-1": -31}
    # ... and departs: its list is empty
    await write_report(monitors.hospital, HOSPITAL, body(HOSPITAL, {}))
    assert await heard(admin, HOSPITAL) == {}


async def test_a_verbatim_copy_is_refused_and_the_victims_departure_removes_its_entry(
    monitors: Monitors, admin: ApiClient
) -> None:
    """Issue 24, hole 2: a copy of the victim's entry, under the attacker's own manager."""
    await write_report(monitors.hospital, HOSPITAL, body(HOSPITAL, {"patient-1": -50}))
    copy = (
        await CustomObjectsApi(admin).get_cluster_custom_object_status(
            GROUP, VERSION, REPORT_PLURAL, HOSPITAL
        )
    )["status"]
    await refused(
        apply_as(monitors.home, HOSPITAL, gateway_field_manager(HOME), copy),
        not_own(HOME, HOSPITAL),
    )
    # the victim departs: nothing of its entry is left anywhere in its report
    await write_report(monitors.hospital, HOSPITAL, body(HOSPITAL, {}))
    assert await heard(admin, HOSPITAL) == {}
    report = await CustomObjectsApi(admin).get_cluster_custom_object(
        GROUP, VERSION, REPORT_PLURAL, HOSPITAL
    )
    managers = {m["manager"] for m in report["metadata"].get("managedFields") or []}
    assert gateway_field_manager(HOME) not in managers


async def test_a_non_gateway_nodes_token_has_no_report_and_cannot_write_a_gateways(
    monitors: Monitors, admin: ApiClient
) -> None:
    """Issue 24, hole 3: a pod on cloud-1 with the monitors' ServiceAccount."""
    vote = body(CLOUD, {"patient-1": 20})
    # its own report does not exist (only labelled gateways get one) and it may not create it
    with pytest.raises(ApiException) as missing:
        await write_report(monitors.cloud, CLOUD, vote)
    assert missing.value.status == 404, missing.value.body
    await refused(
        monitors.cloud.create_cluster_custom_object(
            GROUP, VERSION, REPORT_PLURAL, vote | {"status": {}}
        ),
        "cannot create resource",
    )
    # a gateway's report, under its own manager or the gateway's: refused
    for manager in (gateway_field_manager(CLOUD), gateway_field_manager(HOME)):
        await refused(
            apply_as(monitors.cloud, HOME, manager, {"sightings": [entry("patient-1", 20)]}),
            not_own(CLOUD, HOME),
        )
    assert await heard(admin, HOME) == {}
    # the gateway's own writes go on
    await write_report(monitors.home, HOME, body(HOME, {"patient-1": -60}))
    assert await heard(admin, HOME) == {"patient-1": -60}


async def test_a_token_without_a_node_writes_nothing(monitors: Monitors, admin: ApiClient) -> None:
    no_node = "no node association found for the gateway monitor"
    await refused(write_report(monitors.unbound, HOME, body(HOME, {"patient-1": -60})), no_node)
    await refused(merge_as(monitors.unbound, HOME, {"status": {"sightings": None}}), no_node)
    assert await heard(admin, HOME) == {}
    await write_report(monitors.home, HOME, body(HOME, {"patient-1": -60}))
    assert await heard(admin, HOME) == {"patient-1": -60}


async def test_creating_deleting_or_updating_a_report_is_left_to_rbac_which_refuses_it(
    monitors: Monitors, admin: ApiClient
) -> None:
    custom = CustomObjectsApi(admin)
    attempts = (
        monitors.home.delete_cluster_custom_object(GROUP, VERSION, REPORT_PLURAL, HOME),
        monitors.home.delete_cluster_custom_object(GROUP, VERSION, REPORT_PLURAL, HOSPITAL),
        monitors.home.create_cluster_custom_object(
            GROUP,
            VERSION,
            REPORT_PLURAL,
            {"apiVersion": API_VERSION, "kind": REPORT_KIND, "metadata": {"name": "gw-new"}},
        ),
        monitors.home.patch_cluster_custom_object(
            GROUP,
            VERSION,
            REPORT_PLURAL,
            HOME,
            {"metadata": {"labels": {"x": "y"}}},
            _content_type="application/merge-patch+json",
        ),
    )
    for attempt in attempts:
        await refused(attempt, "cannot")
    # the old per-Device path is closed: no monitor writes a Device's status any more
    await refused(
        monitors.home.patch_cluster_custom_object_status(
            GROUP, VERSION, "devices", "patient-1", {"status": {"sightings": []}}
        ),
        "cannot patch resource",
    )
    assert {
        r["metadata"]["name"]
        for r in (await custom.list_cluster_custom_object(GROUP, VERSION, REPORT_PLURAL))["items"]
    } >= {HOME, HOSPITAL}


async def test_metadata_cannot_be_changed_through_the_status_subresource(
    monitors: Monitors, admin: ApiClient
) -> None:
    """The status subresource drops metadata changes (the policy's metadata rule is the
    second line); either way nothing of them is stored."""
    for meta in ({"labels": {"forged": "yes"}}, {"annotations": {"forged": "yes"}}):
        answer = 200
        try:
            await merge_as(monitors.home, HOME, {"metadata": meta})
        except ApiException as exc:
            answer = exc.status
        assert answer in (200, 403)
    report = await CustomObjectsApi(admin).get_cluster_custom_object(
        GROUP, VERSION, REPORT_PLURAL, HOME
    )
    assert "forged" not in (report["metadata"].get("labels") or {})
    assert "forged" not in (report["metadata"].get("annotations") or {})
    await write_report(monitors.home, HOME, body(HOME, {"patient-1": -60}))
    assert await heard(admin, HOME) == {"patient-1": -60}


async def test_undeclared_fields_answer_422_and_store_nothing(
    monitors: Monitors, admin: ApiClient
) -> None:
    """The issue's 500 "field not declared" on a server-side apply is a 422 here."""
    own = gateway_field_manager(HOME)
    good = entry("patient-1", -60)
    odd = {"device": "patient-1", "rssi": -60, "seen": good["lastSeen"]}
    candidate = {
        "address": "AA:BB:CC:DD:EE:FF",
        "deviceClass": "ward-strap",
        "rssi": -60,
        "lastSeen": good["lastSeen"],
    }
    cases = (
        (apply_as(monitors.home, HOME, own, {"bogus": 1}), "status holds only"),
        # An entry holds its three keys and nothing else (required, maxProperties).
        (
            apply_as(monitors.home, HOME, own, {"sightings": [good, good | {"extra": 1}]}),
            "status.sightings[1]: Too many: 4: must have at most 3 items",
        ),
        (
            merge_as(monitors.home, HOME, {"status": {"sightings": [good | {"extra": 1}]}}),
            "status.sightings[0]: Too many: 4: must have at most 3 items",
        ),
        (
            write_report(monitors.home, HOME, {"status": {"sightings": [odd]}}),
            "status.sightings[0].lastSeen: Required value",
        ),
        (
            merge_as(monitors.home, HOME, {"status": {"candidates": [candidate | {"x": 1}]}}),
            "status.candidates[0]: Too many: 5: must have at most 4 items",
        ),
        (merge_as(monitors.home, HOME, {"status": {"bogus": 1}}), "status holds only"),
        (
            apply_as(monitors.home, HOME, own, {"sightings": [good | {"rssi": 500}]}),
            "less than or equal to 20",
        ),
        (
            apply_as(monitors.home, HOME, own, {"sightings": [good | {"lastSeen": "soon"}]}),
            "lastSeen",
        ),
    )
    for attempt, because in cases:
        await refused(attempt, because, status=422)
    # a spec through the status subresource is dropped by the apiserver (nothing stored)
    await apply_as(monitors.home, HOME, own, {}, spec={"a": 1})
    report = await CustomObjectsApi(admin).get_cluster_custom_object(
        GROUP, VERSION, REPORT_PLURAL, HOME
    )
    assert "spec" not in report
    too_many = {f"patient-{i}": -70 for i in range(REPORT_MAX_SIGHTINGS + 1)}
    await refused(write_report(monitors.home, HOME, body(HOME, too_many)), "Too many", 422)
    assert await heard(admin, HOME) == {}
    # at the cap it fits, and the gateway's next write still goes through
    at_cap = dict(list(too_many.items())[:REPORT_MAX_SIGHTINGS])
    await write_report(monitors.home, HOME, body(HOME, at_cap))
    assert len(await heard(admin, HOME)) == REPORT_MAX_SIGHTINGS
    await write_report(monitors.home, HOME, body(HOME, {"patient-1": -60}))
    assert await heard(admin, HOME) == {"patient-1": -60}
