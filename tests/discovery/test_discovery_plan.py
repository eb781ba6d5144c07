"""Deploy on discovery, the pure parts: the DeviceClass contract (filter, parse) and the
planner that turns candidates into Devices and forgets unheard ones (issue 25)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from cloud4iot.deviceclass import (
    DeviceClass,
    Filter,
    FunctionTemplate,
    device_name,
    full_uuid,
    parse_class,
    parse_duration,
)
from cloud4iot.vocabulary import (
    APPROVAL_APPROVED,
    APPROVAL_LABEL,
    APPROVAL_PENDING,
    CLASS_LABEL,
    DEVICE_ANNOTATION,
)
from extender.approve import approval_event, approval_patch, key_patch
from extender.controllers.discovery import discovered_facts
from extender.controllers.discovery_plan import (
    CANDIDATE_MAX_AGE,
    Discovered,
    NewDevice,
    function_deployments,
    new_device,
    plan_discovery,
    plan_lifecycle,
)
from extender.state.reports import Candidate, report_facts

HR = "0000180d-0000-1000-8000-00805f9b34fb"
NOW = 1_000_000.0


def hr_class(**kw: Any) -> DeviceClass:
    base: dict[str, Any] = {
        "name": "hr-strap",
        "uid": "uid-class",
        "filter": Filter(service_uuids=frozenset({HR})),
        "arrival_rssi": -70,
        "max_devices": 3,
        "forget_after": 600.0,
        "functions": (
            FunctionTemplate(
                "reader",
                "patients",
                {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "reader"}},
                    "template": {
                        "metadata": {"labels": {"app": "reader"}},
                        "spec": {"containers": [{"name": "r", "image": "reader:1"}]},
                    },
                },
            ),
        ),
    }
    base.update(kw)
    return DeviceClass(**base)


def cand(address: str, rssi: int = -60, node: str = "gw-a", age: float = 1.0) -> Candidate:
    return Candidate(node, address, "hr-strap", rssi, NOW - age)


def disc(address: str, created: float = NOW - 10, approval: str = APPROVAL_APPROVED) -> Discovered:
    return Discovered(
        device_name("hr-strap", address), "uid-" + address, address, "hr-strap", approval, created
    )


# --- the filter ------------------------------------------------------------------------


def matches(f: Filter, **kw: Any) -> bool:
    advert: dict[str, Any] = {
        "address": "C0:FF:EE:00:00:01",
        "service_uuids": (),
        "manufacturer_data": {},
        "name": None,
        "address_type": None,
    }
    advert.update(kw)
    return f.matches(**advert)


def test_service_uuid_short_and_full_forms_match() -> None:
    assert full_uuid("0x180D") == full_uuid("180d") == HR
    f = Filter(service_uuids=frozenset({full_uuid("180D")}))
    assert matches(f, service_uuids=(HR,))
    assert matches(f, service_uuids=("0000180f-0000-1000-8000-00805f9b34fb", HR))
    assert not matches(f, service_uuids=("0000180f-0000-1000-8000-00805f9b34fb",))
    assert not matches(f)
    assert not matches(f, service_uuids=("junk",))


def test_manufacturer_prefix_name_glob_and_address_type() -> None:
    f = Filter(manufacturer_id=107, manufacturer_prefix=b"\x01\x02", local_name="Polar H10 *")
    ok = {"manufacturer_data": {107: b"\x01\x02\x03"}, "name": "Polar H10 1234"}
    assert matches(f, **ok)
    assert not matches(f, **{**ok, "manufacturer_data": {107: b"\x01\x03"}})
    assert not matches(f, **{**ok, "manufacturer_data": {108: b"\x01\x02"}})
    assert not matches(f, **{**ok, "name": "Garmin HRM"})
    assert not matches(f, **{**ok, "name": None})
    public_only = Filter(service_uuids=frozenset({HR}), address_types=frozenset({"public"}))
    assert matches(public_only, service_uuids=(HR,), address_type="public")
    assert not matches(public_only, service_uuids=(HR,), address_type="random")
    assert not matches(public_only, service_uuids=(HR,), address_type=None)


def test_rotating_private_addresses_are_ignored_unless_the_class_allows_them() -> None:
    rpa = "4A:11:22:33:44:55"  # top bits 01: resolvable private
    static = "CA:11:22:33:44:55"  # top bits 11: static random
    f = Filter(service_uuids=frozenset({HR}))
    assert not matches(f, address=rpa, service_uuids=(HR,), address_type="random")
    assert matches(f, address=static, service_uuids=(HR,), address_type="random")
    allow = Filter(service_uuids=frozenset({HR}), resolvable_private=True)
    assert matches(allow, address=rpa, service_uuids=(HR,), address_type="random")


def class_obj(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "discovery": {"serviceUUIDs": ["180D"]},
        "functions": [{"name": "reader", "namespace": "patients", "spec": {"replicas": 1}}],
    }
    base.update(spec)
    return {"metadata": {"name": "hr-strap", "uid": "u1"}, "spec": base}


def test_parse_class_reads_the_spec_and_refuses_what_it_cannot_use() -> None:
    c = parse_class(class_obj(arrivalRSSI=-65, admission="approve", maxDevices=4, forgetAfter="2m"))
    assert (c.name, c.uid, c.arrival_rssi, c.admission, c.max_devices, c.forget_after) == (
        "hr-strap",
        "u1",
        -65,
        "approve",
        4,
        120.0,
    )
    assert c.filter.service_uuids == {HR}
    assert [f.name for f in c.functions] == ["reader"]
    assert parse_duration("30s") == 30
    # wildcards beside another part of the filter, or around a literal, are a filter
    assert parse_class(class_obj(discovery={"localName": "Polar *"})).filter.local_name
    assert parse_class(class_obj(discovery={"serviceUUIDs": ["180D"], "localName": "*"}))
    assert parse_duration("2h") == 7200
    for bad in (
        class_obj(discovery={}),  # a filter matching everything
        class_obj(discovery={"localName": "*"}),  # ... every advert with a name
        class_obj(discovery={"localName": "?*"}),
        class_obj(discovery={"serviceUUIDs": ["xyz"]}),
        class_obj(discovery={"manufacturer": {"dataPrefix": "01"}}),  # no id
        class_obj(forgetAfter="soon"),
        class_obj(admission="maybe"),
        {"metadata": {"name": "x" * 41}, "spec": class_obj()["spec"]},
        {"metadata": {"name": "c"}},
    ):
        with pytest.raises(ValueError, match=r"DeviceClass|UUID|duration"):
            parse_class(bad)


def test_report_candidates_are_parsed_and_capped_at_observation() -> None:
    facts = report_facts(
        {
            "metadata": {"name": "gw-a"},
            "status": {
                "candidates": [
                    {
                        "address": "c0:ff:ee:00:00:01",
                        "deviceClass": "hr-strap",
                        "rssi": -60,
                        "lastSeen": "2030-01-01T00:00:00Z",
                    },
                    {"address": "C0:FF:EE:00:00:02", "deviceClass": "hr-strap", "rssi": "x"},
                    "junk",
                ]
            },
        },
        observed_at=NOW,
    )
    assert facts.candidates == (Candidate("gw-a", "C0:FF:EE:00:00:01", "hr-strap", -60, NOW),)


# --- the planner -----------------------------------------------------------------------


def test_a_matching_candidate_becomes_a_device_once() -> None:
    classes = {"hr-strap": hr_class()}
    plan = plan_discovery(classes, [cand("C0:FF:EE:00:00:01")], [], {}, {}, NOW)
    assert plan.create == [
        NewDevice(
            "hr-strap-c0ffee000001", "C0:FF:EE:00:00:01", "hr-strap", APPROVAL_APPROVED, "gw-a"
        )
    ]
    # already a Device (of this class, or registered by an admin): nothing
    made = {d.name: d for d in [disc("C0:FF:EE:00:00:01")]}
    assert plan_discovery(classes, [cand("C0:FF:EE:00:00:01")], [], made, {}, NOW).create == []
    registered = ["c0:ff:ee:00:00:01"]
    assert (
        plan_discovery(classes, [cand("C0:FF:EE:00:00:01")], registered, {}, {}, NOW).create == []
    )


def test_below_arrival_rssi_stale_or_of_no_class_creates_nothing() -> None:
    classes = {"hr-strap": hr_class()}
    for c in (
        cand("C0:FF:EE:00:00:01", rssi=-71),
        cand("C0:FF:EE:00:00:01", age=CANDIDATE_MAX_AGE + 1),
        Candidate("gw-a", "C0:FF:EE:00:00:01", "no-such-class", -40, NOW),
    ):
        assert plan_discovery(classes, [c], [], {}, {}, NOW).create == []
    assert plan_discovery(classes, [cand("C0:FF:EE:00:00:01", rssi=-70)], [], {}, {}, NOW).create


def test_approve_mode_creates_pending_devices() -> None:
    classes = {"hr-strap": hr_class(admission="approve")}
    plan = plan_discovery(classes, [cand("C0:FF:EE:00:00:01")], [], {}, {}, NOW)
    assert [n.approval for n in plan.create] == [APPROVAL_PENDING]


def test_the_cap_holds_against_a_flood_and_the_strongest_win() -> None:
    rng = random.Random(7)
    flood = [
        cand(":".join(f"{rng.randrange(256):02X}" for _ in range(6)), rssi=rng.randrange(-70, -30))
        for _ in range(10_000)
    ]
    classes = {"hr-strap": hr_class(max_devices=3)}
    plan = plan_discovery(classes, flood, [], {}, {}, NOW, max_creates=100)
    assert len(plan.create) == 3
    strongest = sorted(flood, key=lambda c: (-c.rssi, c.address))[:3]
    assert [n.address for n in plan.create] == [c.address for c in strongest]
    assert plan.over_cap["hr-strap"] == len({c.address for c in flood}) - 3
    # the class already holds 2 (pending and denied count): one more only
    held = {
        d.name: d for d in [disc("AA:00:00:00:00:01", approval="denied"), disc("AA:00:00:00:00:02")]
    }
    assert len(plan_discovery(classes, flood, [], held, {}, NOW, max_creates=100).create) == 1


def test_creates_per_pass_are_bounded() -> None:
    classes = {"hr-strap": hr_class(max_devices=100)}
    flood = [cand(f"C0:FF:EE:00:00:{i:02X}") for i in range(50)]
    assert len(plan_discovery(classes, flood, [], {}, {}, NOW, max_creates=5).create) == 5


def test_one_address_heard_by_two_gateways_is_one_device() -> None:
    classes = {"hr-strap": hr_class()}
    both = [cand("C0:FF:EE:00:00:01", -65, "gw-a"), cand("C0:FF:EE:00:00:01", -50, "gw-b")]
    plan = plan_discovery(classes, both, [], {}, {}, NOW)
    assert [(n.name, n.node) for n in plan.create] == [("hr-strap-c0ffee000001", "gw-b")]


def test_unheard_discovered_devices_are_forgotten_after_forget_after() -> None:
    classes = {"hr-strap": hr_class(forget_after=600.0)}
    old = disc("C0:FF:EE:00:00:01", created=NOW - 3600)
    fresh = disc("C0:FF:EE:00:00:02", created=NOW - 100)
    devices = {d.name: d for d in (old, fresh)}
    plan = plan_discovery(classes, [], [], devices, {}, NOW)
    assert plan.forget == [old.name]
    # heard 599 s ago: kept; 600 s: forgotten
    assert plan_discovery(classes, [], [], devices, {old.name: NOW - 599}, NOW).forget == []
    assert plan_discovery(classes, [], [], devices, {old.name: NOW - 600}, NOW).forget == [old.name]
    # a Device of a class that is gone: the garbage collector's, not ours
    assert plan_discovery({}, [], [], devices, {}, NOW).forget == []


def test_new_device_is_labelled_and_owned_by_its_class() -> None:
    cls = hr_class()
    body = new_device(
        NewDevice(
            "hr-strap-c0ffee000001", "C0:FF:EE:00:00:01", "hr-strap", APPROVAL_PENDING, "gw-a"
        ),
        cls,
    )
    assert body["metadata"]["labels"][CLASS_LABEL] == "hr-strap"
    assert body["metadata"]["labels"][APPROVAL_LABEL] == APPROVAL_PENDING
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-class"
    assert body["spec"] == {"address": "C0:FF:EE:00:00:01"}
    back = discovered_facts({**body, "metadata": {**body["metadata"], "uid": "u9"}}, NOW)
    assert (back.name, back.device_class, back.approval, back.uid) == (
        "hr-strap-c0ffee000001",
        "hr-strap",
        APPROVAL_PENDING,
        "u9",
    )
    with pytest.raises(ValueError, match="not a discovered Device"):
        discovered_facts({"metadata": {"name": "registered"}, "spec": {"address": "x"}}, NOW)


def test_function_deployments_carry_the_device_and_are_owned_by_it() -> None:
    cls = hr_class()
    device = disc("C0:FF:EE:00:00:01")
    [dep] = function_deployments(cls, device)
    assert dep["metadata"]["name"] == "reader-hr-strap-c0ffee000001"
    assert dep["metadata"]["namespace"] == "patients"
    owner = dep["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Device", device.name, device.uid)
    template = dep["spec"]["template"]["metadata"]
    assert template["annotations"][DEVICE_ANNOTATION] == device.name
    assert template["labels"] == {"app": "reader", DEVICE_ANNOTATION: device.name}
    assert dep["spec"]["selector"]["matchLabels"] == {
        "app": "reader",
        DEVICE_ANNOTATION: device.name,
    }
    # the class's template is not changed by instantiation
    assert DEVICE_ANNOTATION not in cls.functions[0].spec["template"]["metadata"]["labels"]


@pytest.mark.parametrize(
    "spec",
    [
        {"template": "garbage"},
        {"template": None},
        {"template": {"metadata": ["x"]}},
        {"template": {"metadata": {"labels": "app=reader"}}},
        {"template": {"metadata": {"annotations": 7}}},
        {"selector": "app=reader"},
        {"selector": {"matchLabels": ["app"]}},
    ],
)
def test_a_template_the_extender_cannot_fill_in_is_refused_with_its_class(
    spec: dict[str, Any],
) -> None:
    """The CRD keeps a function's spec as written: a class whose template has a string
    where the device's label goes was accepted, and function_deployments raised on it
    in every pass, so no Device of any class got its functions placed or stowed."""
    obj = class_obj(functions=[{"name": "reader", "namespace": "patients", "spec": spec}])
    with pytest.raises(ValueError, match=r"function reader: spec\.[a-zA-Z.]+ is not an object"):
        parse_class(obj)


def test_every_template_parse_class_accepts_is_filled_in() -> None:
    for spec in (
        {},
        {"template": {}},
        {"template": {"metadata": {}}},
        {"selector": {}, "template": {"metadata": {"labels": {}, "annotations": {}}}},
    ):
        cls = parse_class(
            class_obj(functions=[{"name": "reader", "namespace": "patients", "spec": spec}])
        )
        [dep] = function_deployments(cls, disc("C0:FF:EE:00:00:01"))
        assert dep["spec"]["selector"]["matchLabels"] == {
            DEVICE_ANNOTATION: "hr-strap-c0ffee000001"
        }


def test_the_shipped_example_class_parses() -> None:
    import pathlib

    import yaml

    path = pathlib.Path(__file__).parents[2] / "manifests/examples/deviceclass-hr-strap.yaml"
    c = parse_class(yaml.safe_load(path.read_text()))
    assert (c.name, c.admission, c.max_devices, c.forget_after) == ("hr-strap", "approve", 20, 1800)
    assert c.filter.service_uuids == {HR}
    assert [f.namespace for f in c.functions] == ["patients"]


# --- lifecycle: away, back ------------------------------------------------------------


def test_when_away_and_away_after_are_read_with_defaults_and_bounds() -> None:
    c = parse_class(class_obj(forgetAfter="30m"))
    assert (c.when_away, c.away_after) == ("park", 120.0)
    short = parse_class(class_obj(forgetAfter="15s"))  # the default never outlives forgetting
    assert short.away_after == 15.0
    d = parse_class(class_obj(whenAway="delete", awayAfter="45s", forgetAfter="10m"))
    assert (d.when_away, d.away_after) == ("delete", 45.0)
    with pytest.raises(ValueError, match="whenAway"):
        parse_class(class_obj(whenAway="scale"))
    with pytest.raises(ValueError, match="awayAfter"):
        parse_class(class_obj(awayAfter="20m", forgetAfter="10m"))


@pytest.mark.parametrize(
    "spec", [{"forgetAfter": "0s"}, {"awayAfter": "0m"}, {"forgetAfter": "0h", "awayAfter": "0s"}]
)
def test_a_class_that_forgets_or_stows_at_once_is_refused(spec: dict[str, str]) -> None:
    """The CRD's pattern accepts 0s. forgetAfter 0s deleted a Device in the pass that
    heard it (then made it again from the next candidate: a loop of creates, deletes
    and Events); awayAfter 0s stowed the functions of a Device heard now and never
    placed them."""
    obj = class_obj(**spec)
    cls = DeviceClass(
        name="hr-strap",
        uid="u1",
        filter=Filter(),
        forget_after=parse_duration(spec.get("forgetAfter", "10m")),
        away_after=parse_duration(spec.get("awayAfter", spec.get("forgetAfter", "2m"))),
    )
    heard = disc("C0:FF:EE:00:00:01", created=NOW - 1)
    forget = plan_discovery({cls.name: cls}, [], [], {heard.name: heard}, {heard.name: NOW}, NOW)
    life = plan_lifecycle(
        {cls.name: cls},
        {heard.name: heard},
        {heard.name: NOW},
        {heard.name: NOW},
        NOW,
        set(),
        set(),
    )
    # what such a class did to a Device heard now
    assert forget.forget == [heard.name] or (life.place, life.stow) == ([], [heard.name])
    with pytest.raises(ValueError, match="above 0s"):
        parse_class(obj)


def test_lifecycle_places_heard_devices_and_stows_away_ones_once_each() -> None:
    classes = {"hr-strap": hr_class(away_after=60.0)}
    here = disc("C0:FF:EE:00:00:01")
    gone = disc("C0:FF:EE:00:00:02")
    pending = disc("C0:FF:EE:00:00:03", approval=APPROVAL_PENDING)
    devices = {d.name: d for d in (here, gone, pending)}
    newest = {here.name: NOW - 5, gone.name: NOW - 60, pending.name: NOW - 1}
    heard = {here.name: NOW - 5, gone.name: NOW - 60, pending.name: NOW - 1}
    plan = plan_lifecycle(classes, devices, newest, heard, NOW, set(), set())
    assert plan.place == [here.name]  # a pending Device gets nothing
    assert plan.stow == [gone.name]  # unheard for awayAfter exactly
    # done this term: not again
    again = plan_lifecycle(classes, devices, newest, heard, NOW, {here.uid}, {gone.uid})
    assert (again.place, again.stow) == ([], [])
    # 59 s unheard: its sighting still counts as heard, so it is placed, not stowed
    heard[gone.name] = newest[gone.name] = NOW - 59
    edge = plan_lifecycle(classes, devices, newest, heard, NOW, set(), set())
    assert (edge.place, edge.stow) == ([here.name, gone.name], [])
    # back: the stowed Device is placed again (placed was cleared when it was stowed)
    newest[gone.name] = heard[gone.name] = NOW - 1
    back = plan_lifecycle(classes, devices, newest, heard, NOW, {here.uid}, {gone.uid})
    assert back.place == [gone.name]
    # no sighting listed at all: away counted from last_heard (a new term: its start)
    del newest[gone.name]
    heard[gone.name] = NOW - 61
    assert plan_lifecycle(classes, devices, newest, heard, NOW, set(), set()).stow == [gone.name]
    # a Device being forgotten is neither placed nor stowed
    assert (
        plan_lifecycle(classes, devices, newest, heard, NOW, set(), set(), [gone.name]).stow == []
    )


# --- the approve verb ------------------------------------------------------------------


def test_approval_patch_labels_checks_the_irk_and_refuses_registered_devices() -> None:
    """The label only: the IRK goes to the identity-keys Secret (key_patch), never into
    the Device, and a legacy spec.identityKey is removed as the key is moved."""
    obj = {
        "metadata": {
            "name": "hr-strap-c0ffee000001",
            "uid": "u-d",
            "resourceVersion": "7",
            "labels": {CLASS_LABEL: "hr-strap", APPROVAL_LABEL: APPROVAL_PENDING},
        }
    }
    irk = "EC:02:34:A3 57C8AD05341010A60A397D9B"
    patch = approval_patch(obj, "approve", irk)
    assert patch["metadata"] == {"labels": {APPROVAL_LABEL: "approved"}, "resourceVersion": "7"}
    assert "spec" not in patch
    assert key_patch("hr-strap-c0ffee000001", irk) == {
        "data": {"hr-strap-c0ffee000001": "ZWMwMjM0YTM1N2M4YWQwNTM0MTAxMGE2MGEzOTdkOWI="}
    }  # base64 of ec0234a357c8ad05341010a60a397d9b
    legacy = {**obj, "spec": {"address": "C0:FF:EE:00:00:01", "identityKey": "00" * 16}}
    assert approval_patch(legacy, "approve", irk)["spec"] == {"identityKey": None}
    assert "spec" not in approval_patch(legacy, "approve")  # no key given: left alone
    assert "spec" not in approval_patch(obj, "deny")
    for bad in ("ec0234", "zz" * 16, "ec0234a357c8ad05341010a60a397d9b00"):
        with pytest.raises(ValueError, match="32 hex digits"):
            approval_patch(obj, "approve", bad)
    with pytest.raises(ValueError, match="registered"):
        approval_patch({"metadata": {"name": "patient-42-hr", "labels": {}}}, "approve")
    event = approval_event(obj, "approve", True, NOW)
    assert (event["reason"], event["involvedObject"]["uid"]) == ("Approved", "u-d")
    assert approval_event(obj, "deny", False, NOW)["reason"] == "Denied"


def _one_device_plan(
    approval: str,
    stowed: set[str],
    revoked: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[str]:
    cls = parse_class(class_obj(admission="approve"))
    device = Discovered("x-1", "uid-1", "AA", cls.name, approval, NOW - 1000)
    return plan_lifecycle(
        {cls.name: cls},
        {device.name: device},
        {device.name: NOW - 1},
        {device.name: NOW - 1},
        NOW,
        placed={"uid-1"},
        stowed=stowed,
        revoked=revoked,
    ).revoke


def test_only_a_denied_device_loses_its_functions() -> None:
    # a removed or mistyped approval label is not a denial: such a Device is left alone
    assert _one_device_plan("denied", set()) == ["x-1"]
    assert _one_device_plan("", set()) == []
    assert _one_device_plan("Approved", set()) == []


def test_a_parked_device_denied_later_still_loses_its_functions_once() -> None:
    # parked by its class (stowed), then denied: its parked Deployments go too, once
    assert _one_device_plan("denied", stowed={"uid-1"}) == ["x-1"]
    assert _one_device_plan("denied", stowed={"uid-1"}, revoked={"uid-1"}) == []
