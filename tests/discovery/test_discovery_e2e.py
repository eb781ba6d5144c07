"""Deploy on discovery on the devcluster (issue 25): a gateway reports a candidate in its
own GatewayReport with its node-bound token, the elected extender makes the Device and
its function Deployment, whose pod the real kube-scheduler places with our extender on
the gateway that hears it; unheard past forgetAfter, both are gone (the Deployment by
the garbage collector). The cap holds, approve mode waits for `cloud4iot devices
approve`, and a gateway cannot create Devices or Deployments itself.

The "monitor" writes exactly what gateway_monitor's CandidateWriter and Publisher send
(CandidateBook.body under the candidates field manager; report_body under its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes.aio.client import ApiClient, AppsV1Api, CoreV1Api, CustomObjectsApi
from kubernetes.aio.client.exceptions import ApiException

from cloud4iot.deviceclass import CLASS_PLURAL, device_name, parse_class
from cloud4iot.devices import (
    APPLY_PATCH,
    GATEWAY_NAMESPACE,
    GROUP,
    IDENTITY_KEYS_SECRET,
    PLURAL,
    REPORT_PLURAL,
    VERSION,
)
from cloud4iot.vocabulary import (
    APPROVAL_LABEL,
    DEVICE_ANNOTATION,
    DISCOVERY_PARKED_ANNOTATION,
)
from extender.cli import main as cloud4iot
from extender.controllers.discovery_plan import Discovered, function_deployments
from gateway_monitor.discovery import (
    CandidateBook,
    CandidateWriter,
    ClassBook,
    Discovery,
    candidates_field_manager,
)
from gateway_monitor.irk import make_rpa, parse_irk
from gateway_monitor.metrics import Metrics
from gateway_monitor.monitor import Monitor
from gateway_monitor.registry import Registry, parse_device, parse_identity_keys
from gateway_monitor.report import report_body, write_report
from gateway_monitor.scanner import Advert
from gateway_monitor.tracker import Tracker
from tests.discovery.world import deployments, device_reasons, devices_of
from tests.gateway_monitor.node_tokens import node_bound_clients
from tests.waiting import eventually

pytestmark = pytest.mark.cluster

HOSPITAL = "gw-hospital"
HOME = "gw-home"
HR = "180D"


@pytest.fixture
async def hospital(admin: ApiClient) -> AsyncIterator[CustomObjectsApi]:
    """The gw-hospital monitor's identity: a token bound to a pod on that node."""
    async with node_bound_clients(admin, [HOSPITAL]) as ids:
        api = CustomObjectsApi(ids.clients[HOSPITAL])

        async def ready() -> bool:  # the report exists and the RBAC cache caught up
            try:
                await api.get_cluster_custom_object_status(GROUP, VERSION, REPORT_PLURAL, HOSPITAL)
            except ApiException as exc:
                if exc.status in (403, 404):
                    return False
                raise
            return True

        try:
            await eventually(ready, within=30, what="gw-hospital's report and the monitors' RBAC")
            yield api
        finally:
            await report_candidates(api, [])
            await write_report(api, HOSPITAL, report_body(HOSPITAL, {}, time.time()))


async def report_candidates(api: CustomObjectsApi, entries: list[tuple[str, str, int]]) -> None:
    """(address, class, rssi) as the gateway's CandidateWriter applies them."""
    book = CandidateBook()
    for address, cls, rssi in entries:
        book.observe(address, cls, rssi, time.time())
    await api.patch_cluster_custom_object_status(
        GROUP,
        VERSION,
        REPORT_PLURAL,
        HOSPITAL,
        book.body(HOSPITAL),
        field_manager=candidates_field_manager(HOSPITAL),
        force=True,
        _content_type=APPLY_PATCH,
    )


def device_class(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    pod = {
        "schedulerName": "cloud4iot-scheduler",
        "containers": [
            {
                "name": "reader",
                "image": "registry.invalid/cloud4iot/hr-reader:test",
                "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}},
            }
        ],
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {
            "discovery": {"serviceUUIDs": [HR]},
            "arrivalRSSI": -75,
            "forgetAfter": "15s",
            "functions": [
                {
                    "name": "reader",
                    "namespace": namespace,
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": {"app": "hr-reader"}},
                        "template": {
                            "metadata": {
                                "labels": {"app": "hr-reader"},
                                # proximity required: only the nearest gateway will do
                                "annotations": {"cloud4iot.io/function": "mhealth-consolidator"},
                            },
                            "spec": pod,
                        },
                    },
                }
            ],
            **spec,
        },
    }


@pytest.fixture
async def make_class(admin: ApiClient) -> AsyncIterator[Any]:
    custom = CustomObjectsApi(admin)
    made: list[str] = []

    async def make(namespace: str, **spec: Any) -> str:
        name = f"hr-{uuid.uuid4().hex[:6]}"
        await custom.create_cluster_custom_object(
            GROUP, VERSION, CLASS_PLURAL, device_class(name, namespace, **spec)
        )
        made.append(name)
        return name

    yield make
    for name in made:  # its Devices and their Deployments go by garbage collection
        await custom.delete_cluster_custom_object(GROUP, VERSION, CLASS_PLURAL, name)


async def test_a_reported_candidate_gets_its_device_and_function_on_that_gateway_then_goes(
    admin: ApiClient, hospital: CustomObjectsApi, make_class: Any, namespace: str
) -> None:
    custom, apps, core = CustomObjectsApi(admin), AppsV1Api(admin), CoreV1Api(admin)
    cls = await make_class(namespace)
    address = "C0:FF:EE:25:00:01"
    name = device_name(cls, address)
    await report_candidates(hospital, [(address, cls, -60)])
    await eventually(lambda: _has(devices_of(custom, cls), name), within=20, what="the Device")
    device = (await devices_of(custom, cls))[name]
    assert device["spec"]["address"] == address
    assert device["metadata"]["labels"][APPROVAL_LABEL] == "approved"
    assert device["metadata"]["ownerReferences"][0]["name"] == cls
    # the monitor now tracks it as a Device: its sighting in the report, candidate gone
    await report_candidates(hospital, [])
    await write_report(
        hospital, HOSPITAL, report_body(HOSPITAL, {name: (-58, time.time())}, time.time())
    )
    deployment = f"reader-{name}"
    await eventually(
        lambda: _has(deployments(apps, namespace), deployment), within=20, what="the Deployment"
    )
    dep = (await deployments(apps, namespace))[deployment]
    assert dep.metadata.owner_references[0].uid == device["metadata"]["uid"]

    heard = [time.time()]  # the lastSeen last written

    async def placed() -> bool:
        # the monitor's heartbeat keeps lastSeen fresh while it hears the device
        heard[0] = time.time()
        await write_report(
            hospital, HOSPITAL, report_body(HOSPITAL, {name: (-58, heard[0])}, heard[0])
        )
        pods = await core.list_namespaced_pod(
            namespace, label_selector=f"{DEVICE_ANNOTATION}={name}"
        )
        return any(p.spec.node_name for p in pods.items)

    await eventually(placed, within=40, what="the function's pod placed", interval=1.0)
    pods = await core.list_namespaced_pod(namespace, label_selector=f"{DEVICE_ANNOTATION}={name}")
    assert {p.spec.node_name for p in pods.items if p.spec.node_name} == {HOSPITAL}
    assert pods.items[0].metadata.annotations[DEVICE_ANNOTATION] == name
    # the last sighting: held for a few discovery passes (1 s each) so the controller,
    # which samples the reports once a pass, has surely seen it before it goes
    heard[0] = time.time()
    await write_report(hospital, HOSPITAL, report_body(HOSPITAL, {name: (-58, heard[0])}, heard[0]))
    await asyncio.sleep(3.0)
    # switched off: no gateway reports it; after forgetAfter (15 s) both are gone
    await write_report(hospital, HOSPITAL, report_body(HOSPITAL, {}, time.time()))
    await eventually(
        lambda: _lacks(devices_of(custom, cls), name), within=40, what="the Device forgotten"
    )
    # not before forgetAfter: 15 s after the last lastSeen written (floored to the
    # second, as rfc3339 writes it)
    assert time.time() - math.floor(heard[0]) >= 14.5
    await eventually(
        lambda: _lacks(deployments(apps, namespace), deployment),
        within=40,
        what="the Deployment garbage-collected",
    )

    async def reasons() -> set[str]:
        events = await core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={name}"
        )
        return {e.reason for e in events.items if e.involved_object.kind == "Device"}

    assert await reasons() == {"Discovered", "Approved", "Instantiated", "Forgotten"}


async def test_the_cap_holds_and_approve_mode_waits_for_the_verb(
    admin: ApiClient, hospital: CustomObjectsApi, make_class: Any, namespace: str, devcluster: Any
) -> None:
    custom, apps = CustomObjectsApi(admin), AppsV1Api(admin)
    cls = await make_class(namespace, admission="approve", maxDevices=2, forgetAfter="10m")
    flood = [(f"C0:FF:EE:25:01:{i:02X}", cls, -50 - i) for i in range(20)]
    flood.append(("C0:FF:EE:25:02:00", cls, -80))  # below the arrival RSSI
    await report_candidates(hospital, flood)
    await eventually(
        lambda: _count(devices_of(custom, cls), 2), within=20, what="two pending Devices"
    )
    await asyncio.sleep(4)  # four more passes with 21 candidates listed
    made = await devices_of(custom, cls)
    assert sorted(made) == sorted(device_name(cls, a) for a, _, _ in flood[:2])  # strongest
    assert {d["metadata"]["labels"][APPROVAL_LABEL] for d in made.values()} == {"pending"}
    first, second = sorted(made)
    # the monitor tracks them as Devices now (pending ones too)
    now = time.time()
    heard = report_body(HOSPITAL, {first: (-50, now), second: (-51, now)}, now)
    await write_report(hospital, HOSPITAL, heard)
    await asyncio.sleep(3)
    assert await deployments(apps, namespace) == {}  # nothing until approved
    kubeconfig = str(devcluster.kubeconfig)
    irk = "EC0234A357C8AD05341010A60A397D9B"  # the Core spec's sample key
    approve = ["devices", "approve", first, "--irk", irk, "--kubeconfig", kubeconfig]
    assert (
        cloud4iot(["devices", "approve", first, "--irk", "0badc0de", "--kubeconfig", kubeconfig])
        == 1
    )
    assert cloud4iot(approve) == 0
    # stored where the monitors read it (the identity-keys Secret in their namespace,
    # not the Device, which many roles may list): their registry follows the rotating
    # address
    device = await custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, first)
    assert "identityKey" not in device["spec"]
    spec = parse_device(device)
    assert spec is not None
    assert spec.irk is None
    keys = await CoreV1Api(admin).read_namespaced_secret(IDENTITY_KEYS_SECRET, GATEWAY_NAMESPACE)
    registry = Registry()
    registry.replace_all([spec])
    registry.set_keys(parse_identity_keys(keys.to_dict()))
    assert registry.irk(first) == parse_irk(irk)
    assert registry.lookup(make_rpa(parse_irk(irk), b"\x01\x02\x03")) == first
    assert cloud4iot(["devices", "deny", second, "--kubeconfig", kubeconfig]) == 0
    await eventually(
        lambda: _has(deployments(apps, namespace), f"reader-{first}"),
        within=20,
        what="the approved Device's Deployment",
    )
    await asyncio.sleep(3)
    assert set(await deployments(apps, namespace)) == {f"reader-{first}"}  # denied: none
    assert len(await devices_of(custom, cls)) == 2  # a denied Device still holds its slot
    # each verb left its Event; a pending Device was never Approved by the extender
    core = CoreV1Api(admin)
    assert await device_reasons(core, first) == {"Discovered", "Approved", "Instantiated"}
    assert await device_reasons(core, second) == {"Discovered", "Denied"}


async def test_a_gateway_cannot_create_devices_or_deployments(
    hospital: CustomObjectsApi, namespace: str
) -> None:
    with pytest.raises(ApiException) as refused:
        await hospital.create_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Device",
                "metadata": {"name": "planted"},
                "spec": {"address": "C0:FF:EE:25:03:00"},
            },
        )
    assert refused.value.status == 403
    apps = AppsV1Api(hospital.api_client)
    with pytest.raises(ApiException) as refused:
        await apps.create_namespaced_deployment(
            namespace,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "planted"},
                "spec": {
                    "selector": {"matchLabels": {"a": "b"}},
                    "template": {
                        "metadata": {"labels": {"a": "b"}},
                        "spec": {"containers": [{"name": "c", "image": "x"}]},
                    },
                },
            },
        )
    assert refused.value.status == 403


async def discovered_and_heard(
    custom: CustomObjectsApi, hospital: CustomObjectsApi, cls: str, address: str
) -> str:
    """The candidate reported, its Device made, and the monitor tracking it."""
    name = device_name(cls, address)
    await report_candidates(hospital, [(address, cls, -60)])
    await eventually(lambda: _has(devices_of(custom, cls), name), within=20, what="the Device")
    await report_candidates(hospital, [])
    return name


def heard_on(api: CustomObjectsApi, core: CoreV1Api, node: str, name: str, ns: str) -> Any:
    """A check that keeps `node`'s sighting of `name` fresh (the monitor's heartbeat) and
    is true once the device's function runs there."""

    async def placed() -> bool:
        now = time.time()
        await write_report(api, node, report_body(node, {name: (-58, now)}, now))
        pods = await core.list_namespaced_pod(ns, label_selector=f"{DEVICE_ANNOTATION}={name}")
        return any(p.spec.node_name == node for p in pods.items)

    return placed


async def silent(api: CustomObjectsApi, node: str) -> None:
    await write_report(api, node, report_body(node, {}, time.time()))


async def test_an_away_device_s_functions_are_parked_and_come_back_where_it_is_heard(
    admin: ApiClient, hospital: CustomObjectsApi, make_class: Any, namespace: str
) -> None:
    """whenAway: park (the default): unheard for awayAfter, the Deployment is scaled to
    zero with its replica count saved; heard again, by another gateway, it is scaled
    back and its pod placed there by the real scheduler and our extender."""
    custom, apps, core = CustomObjectsApi(admin), AppsV1Api(admin), CoreV1Api(admin)
    cls = await make_class(namespace, awayAfter="5s", forgetAfter="10m")
    name = await discovered_and_heard(custom, hospital, cls, "C0:FF:EE:25:04:01")
    deployment = f"reader-{name}"
    await eventually(
        heard_on(hospital, core, HOSPITAL, name, namespace), within=40, what="placed", interval=1
    )
    last = time.time()  # the last sighting, held for a few passes (see the first test)
    await write_report(hospital, HOSPITAL, report_body(HOSPITAL, {name: (-58, last)}, last))
    await asyncio.sleep(3.0)
    await silent(hospital, HOSPITAL)

    async def parked() -> bool:
        dep = (await deployments(apps, namespace)).get(deployment)
        return dep is not None and dep.spec.replicas == 0

    await eventually(parked, within=30, what="the Deployment parked")
    # not before awayAfter (5 s) from the lastSeen last written (floored to the second)
    assert time.time() - math.floor(last) >= 4.9
    dep = (await deployments(apps, namespace))[deployment]
    assert dep.metadata.annotations[DISCOVERY_PARKED_ANNOTATION] == "1"
    await eventually(lambda: _none(core, namespace, name), within=30, what="the parked pod gone")
    assert await device_reasons(core, name) >= {"Parked"}
    assert "Restored" not in await device_reasons(core, name)
    assert name in await devices_of(custom, cls)  # parked, not forgotten
    # back, heard by gw-home now (its report written with the admin's credentials)
    await eventually(heard_on(custom, core, HOME, name, namespace), within=60, interval=1)
    dep = (await deployments(apps, namespace))[deployment]
    assert dep.spec.replicas == 1
    assert DISCOVERY_PARKED_ANNOTATION not in (dep.metadata.annotations or {})
    await eventually(lambda: _has(device_reasons(core, name), "Restored"), what="Restored")
    await silent(custom, HOME)


async def test_when_away_delete_removes_the_functions_and_makes_them_again(
    admin: ApiClient, hospital: CustomObjectsApi, make_class: Any, namespace: str
) -> None:
    custom, apps, core = CustomObjectsApi(admin), AppsV1Api(admin), CoreV1Api(admin)
    cls = await make_class(namespace, whenAway="delete", awayAfter="5s", forgetAfter="10m")
    name = await discovered_and_heard(custom, hospital, cls, "C0:FF:EE:25:05:01")
    deployment = f"reader-{name}"
    await eventually(
        heard_on(hospital, core, HOSPITAL, name, namespace), within=40, what="placed", interval=1
    )
    first_uid = (await deployments(apps, namespace))[deployment].metadata.uid
    await asyncio.sleep(3.0)
    await silent(hospital, HOSPITAL)
    await eventually(
        lambda: _lacks(deployments(apps, namespace), deployment),
        within=30,
        what="the Deployment deleted",
    )
    await eventually(lambda: _has(device_reasons(core, name), "Removed"), what="Removed")
    assert name in await devices_of(custom, cls)  # the Device stays until forgetAfter
    # the garbage collector takes the old pod after its Deployment: until then "placed"
    # below could see that pod, not one of the new Deployment
    await eventually(lambda: _none(core, namespace, name), within=30, what="the old pod gone")
    await eventually(
        heard_on(hospital, core, HOSPITAL, name, namespace), within=60, what="back", interval=1
    )
    assert (await deployments(apps, namespace))[deployment].metadata.uid != first_uid
    await silent(hospital, HOSPITAL)


async def test_the_class_schema_refuses_a_bad_when_away_or_an_away_after_past_forget_after(
    admin: ApiClient, namespace: str
) -> None:
    """Also what the extender's class parser refuses (a 0s forgetAfter or awayAfter, a
    wildcards-only localName alone), refused at once by the apiserver with a reason."""
    custom = CustomObjectsApi(admin)
    for spec, says in (
        ({"whenAway": "scale"}, "whenAway"),
        ({"awayAfter": "20m", "forgetAfter": "10m"}, "awayAfter is at most forgetAfter"),
        ({"awayAfter": "soon"}, "awayAfter"),
        ({"forgetAfter": "0s"}, "forgetAfter is longer than 0s"),
        ({"awayAfter": "0m"}, "awayAfter is longer than 0s"),
        ({"discovery": {"localName": "*"}}, "not only wildcards"),
        ({"discovery": {"localName": "?*?"}}, "not only wildcards"),
    ):
        body = device_class(f"bad-{uuid.uuid4().hex[:6]}", namespace, **spec)
        with pytest.raises(ApiException) as refused:
            await custom.create_cluster_custom_object(GROUP, VERSION, CLASS_PLURAL, body)
        assert refused.value.status == 422
        assert says in refused.value.body
    # the control: a name with literal text, alone, is a filter
    fine = device_class(
        f"ok-{uuid.uuid4().hex[:6]}", namespace, discovery={"localName": "Polar H10 *"}
    )
    await custom.create_cluster_custom_object(GROUP, VERSION, CLASS_PLURAL, fine)
    await custom.delete_cluster_custom_object(
        GROUP, VERSION, CLASS_PLURAL, fine["metadata"]["name"]
    )


async def apiserver_writes(admin: ApiClient) -> dict[tuple[str, str], float]:
    """The apiserver's own count of writes, per (resource[/subresource], verb)."""
    method, url, headers, body, post = await admin.param_serialize(
        "GET", "/metrics", auth_settings=["BearerToken"]
    )
    resp = await admin.call_api(method, url, headers, body, post, _preload_content=False)
    raw = await resp.read()
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if labels.get("verb") not in ("POST", "PATCH", "PUT", "DELETE", "APPLY"):
            continue
        sub = labels.get("subresource", "")
        key = (labels["resource"] + (f"/{sub}" if sub else ""), labels["verb"])
        out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def test_a_flood_of_random_matching_addresses_stays_within_the_cap_and_writes_little(
    admin: ApiClient, hospital: CustomObjectsApi, make_class: Any, namespace: str
) -> None:
    """Issue 25, Verify: 10,000 random addresses matching a class, heard by one gateway
    over 20 s (500 adverts a second) through the monitor's matching path and its
    candidate writer (node-bound token): the class's cap holds and the apiserver sees a
    bounded number of writes (its own apiserver_request_total, before and after).
    BENCHMARKS.md, "Discovery flood", records one run."""
    custom = CustomObjectsApi(admin)
    cls = await make_class(namespace, maxDevices=5, forgetAfter="10m")
    book = ClassBook()
    await eventually(lambda: _class_in(custom, book, cls), what="the class")
    discovery = Discovery(book, CandidateBook())
    registry, metrics = Registry(), Metrics()
    registry.replace_all([])
    sink = _NoSink()
    mon = Monitor(
        HOSPITAL, Tracker(), registry, sink, metrics, clock=time.monotonic, discovery=discovery
    )
    writer = CandidateWriter(hospital, HOSPITAL, discovery.book, backoff=lambda n: 1.0)
    before = await apiserver_writes(admin)
    task = asyncio.create_task(writer.run())
    rng = random.Random(25)
    started = time.monotonic()
    try:
        for second in range(20):
            for _ in range(500):
                address = ":".join(f"{rng.randrange(256):02X}" for _ in range(6))
                mon.on_advert(Advert(address, rng.randrange(-69, -40), 0.0, service_uuids=(HR,)))
            await asyncio.sleep(max(0.0, started + second + 1 - time.monotonic()))
        await eventually(
            lambda: _count(devices_of(custom, cls), 5), within=20, what="the cap reached"
        )
        await asyncio.sleep(4.0)  # more passes with 64 candidates listed
    finally:
        task.cancel()
    elapsed = time.monotonic() - started
    after = await apiserver_writes(admin)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    delta = {k: v for k, v in delta.items() if v}
    made = await devices_of(custom, cls)
    print(
        f"\nflood: {len(made)} Devices, gateway writes {writer.writes}, "
        f"{elapsed:.0f}s, apiserver writes {sorted(delta.items())}"
    )
    assert len(made) == 5  # the cap
    assert len(discovery.book.entries) == 64  # the gateway's list: bounded, strongest kept
    assert writer.writes <= elapsed / writer.min_interval + 1
    assert delta.get(("devices", "POST"), 0) <= 5
    assert delta.get(("deployments", "POST"), 0) == 0  # none heard as a Device: no functions
    # everything else written meanwhile: the reports (both monitors' heartbeats and this
    # writer), Leases, the Events of five Devices: tens, not thousands
    assert sum(delta.values()) < 200


class _NoSink:
    def update(self, device: str, sighting: Any) -> None:
        raise AssertionError(f"a flood address was tracked: {device}")

    def adopt(self, device: str, sighting: Any) -> None: ...

    def forget(self, device: str) -> None: ...


async def _class_in(custom: CustomObjectsApi, book: ClassBook, name: str) -> bool:
    obj = await custom.get_cluster_custom_object(GROUP, VERSION, CLASS_PLURAL, name)
    book.classes = {name: parse_class(obj)}
    return True


async def _none(core: CoreV1Api, namespace: str, device: str) -> bool:
    pods = await core.list_namespaced_pod(namespace, label_selector=f"{DEVICE_ANNOTATION}={device}")
    return not pods.items


async def _has(pending: Any, key: str) -> bool:
    return key in await pending


async def _lacks(pending: Any, key: str) -> bool:
    return key not in await pending


async def _count(pending: Any, n: int) -> bool:
    return len(await pending) >= n


# --- an outside review's attacks (2026-12-08) -------------------------------------------


def keep_heard(api: CustomObjectsApi, node: str, names: list[str], check: Any) -> Any:
    """A check that first renews `node`'s sightings of `names` (the monitor's heartbeat)."""

    async def heard_and() -> bool:
        now = time.time()
        await write_report(api, node, report_body(node, {n: (-58, now) for n in names}, now))
        return bool(await check())

    return heard_and


async def test_a_function_whose_namespace_comes_later_is_made_once_it_exists(
    admin: ApiClient, hospital: CustomObjectsApi, make_class: Any, namespace: str, kube_api: Any
) -> None:
    """The class names a namespace the admin has not made yet: its create is answered
    404, which counted as "already there", and the function never came in that term."""
    from devcluster import kube

    custom, apps, core = CustomObjectsApi(admin), AppsV1Api(admin), CoreV1Api(admin)
    later = f"{namespace}-later"
    cls = await make_class(later, forgetAfter="10m")
    name = await discovered_and_heard(custom, hospital, cls, "C0:FF:EE:25:06:01")
    deployment = f"reader-{name}"
    for _ in range(4):  # a few passes while it is heard and the namespace is missing
        await keep_heard(hospital, HOSPITAL, [name], lambda: asyncio.sleep(0, True))()
        await asyncio.sleep(1.0)
    kube.create_namespace(kube_api, later)
    try:
        await eventually(
            keep_heard(
                hospital, HOSPITAL, [name], lambda: _has(deployments(apps, later), deployment)
            ),
            within=30,
            what="the function made in the namespace that came later",
            interval=1,
        )
    finally:
        await silent(hospital, HOSPITAL)
        await core.delete_namespace(later)


async def test_a_class_with_a_garbage_template_holds_up_no_other_class(
    admin: ApiClient, hospital: CustomObjectsApi, make_class: Any, namespace: str
) -> None:
    """The CRD keeps a function's spec as written: a template that is a string is
    stored. With an approved Device of that class heard, every discovery pass raised
    at it, and the Devices after it (here another class's) never got their functions."""
    custom, apps = CustomObjectsApi(admin), AppsV1Api(admin)
    bad = f"aa-{uuid.uuid4().hex[:6]}"  # its Device sorts before the good class's
    body = device_class(bad, namespace)
    body["spec"]["functions"][0]["spec"] = {"replicas": 1, "template": "garbage"}
    await custom.create_cluster_custom_object(GROUP, VERSION, CLASS_PLURAL, body)  # stored
    try:
        # its Device, as a version of the extender without the check made it
        stray = device_name(bad, "C0:FF:EE:25:07:01")
        await custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Device",
                "metadata": {
                    "name": stray,
                    "labels": {"cloud4iot.io/device-class": bad, APPROVAL_LABEL: "approved"},
                },
                "spec": {"address": "C0:FF:EE:25:07:01"},
            },
        )
        good = await make_class(namespace, forgetAfter="10m")
        name = await discovered_and_heard(custom, hospital, good, "C0:FF:EE:25:07:02")
        assert stray < name
        await eventually(
            keep_heard(
                hospital,
                HOSPITAL,
                [stray, name],
                lambda: _has(deployments(apps, namespace), f"reader-{name}"),
            ),
            within=30,
            what="the other class's function",
            interval=1,
        )
    finally:
        await silent(hospital, HOSPITAL)
        await custom.delete_cluster_custom_object(GROUP, VERSION, CLASS_PLURAL, bad)
        with contextlib.suppress(ApiException):
            await custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, stray)


async def test_a_device_denied_after_approval_loses_its_function(
    admin: ApiClient, hospital: CustomObjectsApi, make_class: Any, namespace: str, devcluster: Any
) -> None:
    """`cloud4iot devices deny` on an approved, heard Device: its function ran on."""
    custom, apps, core = CustomObjectsApi(admin), AppsV1Api(admin), CoreV1Api(admin)
    cls = await make_class(namespace, forgetAfter="10m")
    name = await discovered_and_heard(custom, hospital, cls, "C0:FF:EE:25:08:01")
    deployment = f"reader-{name}"
    try:
        await eventually(
            keep_heard(
                hospital, HOSPITAL, [name], lambda: _has(deployments(apps, namespace), deployment)
            ),
            within=30,
            what="the function",
            interval=1,
        )
        deny = ["devices", "deny", name, "--kubeconfig", str(devcluster.kubeconfig)]
        assert cloud4iot(deny) == 0
        await eventually(
            keep_heard(
                hospital, HOSPITAL, [name], lambda: _lacks(deployments(apps, namespace), deployment)
            ),
            within=30,
            what="the denied Device's function deleted",
            interval=1,
        )
        await eventually(lambda: _has(device_reasons(core, name), "Removed"), what="Removed")
        assert name in await devices_of(custom, cls)  # denied, not forgotten
    finally:
        await silent(hospital, HOSPITAL)


async def test_a_function_created_after_its_device_was_deleted_is_collected(
    admin: ApiClient, namespace: str
) -> None:
    """The Device deleted while its function's create is in flight: the Deployment lands
    owned by a uid that no longer exists, and the garbage collector removes it."""
    custom, apps = CustomObjectsApi(admin), AppsV1Api(admin)
    name = f"gone-{uuid.uuid4().hex[:6]}"
    device = await custom.create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Device",
            "metadata": {"name": name},
            "spec": {"address": "C0:FF:EE:25:09:01"},
        },
    )
    await custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    cls = parse_class(device_class("hr-late", namespace))
    facts = Discovered(
        name, device["metadata"]["uid"], "C0:FF:EE:25:09:01", "hr-late", "approved", 0.0
    )
    [body] = function_deployments(cls, facts)
    await apps.create_namespaced_deployment(namespace, body)
    await eventually(
        lambda: _lacks(deployments(apps, namespace), body["metadata"]["name"]),
        within=60,
        what="the orphan collected",
    )


async def test_deleting_a_class_takes_its_devices_and_their_functions(
    admin: ApiClient, hospital: CustomObjectsApi, namespace: str
) -> None:
    """The class deleted while its Device's function runs: the garbage collector takes
    the Device (owned by the class), then its Deployment (owned by the Device)."""
    custom, apps = CustomObjectsApi(admin), AppsV1Api(admin)
    cls = f"hr-{uuid.uuid4().hex[:6]}"
    body = device_class(cls, namespace, forgetAfter="10m")
    await custom.create_cluster_custom_object(GROUP, VERSION, CLASS_PLURAL, body)
    try:
        name = await discovered_and_heard(custom, hospital, cls, "C0:FF:EE:25:0A:01")
        deployment = f"reader-{name}"
        await eventually(
            keep_heard(
                hospital, HOSPITAL, [name], lambda: _has(deployments(apps, namespace), deployment)
            ),
            within=30,
            what="the function",
            interval=1,
        )
    finally:
        await custom.delete_cluster_custom_object(GROUP, VERSION, CLASS_PLURAL, cls)
    try:
        await eventually(lambda: _lacks(devices_of(custom, cls), name), within=60, what="Device")
        await eventually(
            lambda: _lacks(deployments(apps, namespace), deployment), within=60, what="function"
        )
    finally:
        await silent(hospital, HOSPITAL)
