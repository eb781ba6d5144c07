"""Deploy on discovery, the pure part: candidates + classes + Devices in, writes out.

Gateways report candidates (unregistered addresses matching a DeviceClass) in their own
GatewayReport; this planner decides which become Devices (the class's arrival RSSI,
its cap, a bound on creates per pass), which discovered Devices are forgotten (no
sighting for the class's `forgetAfter`), and the Deployments each admitted Device's
functions are made of. Registered Devices (no class label) are never touched.
docs/gateway-writes.md, section 4.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from cloud4iot.deviceclass import APPROVE, CLASS_KIND, DeviceClass, device_name
from cloud4iot.devices import API_VERSION, KIND
from cloud4iot.vocabulary import (
    APPROVAL_APPROVED,
    APPROVAL_DENIED,
    APPROVAL_LABEL,
    APPROVAL_PENDING,
    CLASS_LABEL,
    DEVICE_ANNOTATION,
)
from extender.state.reports import Candidate

# A candidate older than this is not acted on: the gateway stopped hearing it (its
# monitor refreshes a candidate's lastSeen every few seconds while it hears it).
CANDIDATE_MAX_AGE = 60.0
# Device creates per pass (one pass a second): whatever the gateways report, the
# controller's writes to the apiserver stay bounded.
MAX_CREATES_PER_PASS = 5
MANAGED_BY = {"app.kubernetes.io/managed-by": "cloud4iot-extender"}


@dataclass(frozen=True, slots=True)
class Discovered:
    """A Device made from a candidate (it carries CLASS_LABEL)."""

    name: str
    uid: str
    address: str
    device_class: str
    approval: str
    created: float  # metadata.creationTimestamp, epoch seconds


@dataclass(frozen=True, slots=True)
class NewDevice:
    name: str
    address: str
    device_class: str
    approval: str
    node: str  # the gateway that reported it (for the log line)


@dataclass(slots=True)
class DiscoveryPlan:
    create: list[NewDevice] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)
    over_cap: dict[str, int] = field(default_factory=dict)  # class -> candidates turned away


def plan_discovery(
    classes: Mapping[str, DeviceClass],
    candidates: Iterable[Candidate],
    registered: Iterable[str],
    discovered: Mapping[str, Discovered],
    last_heard: Mapping[str, float],
    now: float,
    max_creates: int = MAX_CREATES_PER_PASS,
    unseen: Mapping[str, str] | None = None,
) -> DiscoveryPlan:
    """What to create and delete now.

    `registered` are the addresses of every Device (discovered or not); `last_heard`
    maps a discovered Device to when a gateway last reported it (absent: its creation).
    Candidates of one address from several gateways count once (the strongest wins);
    per class the strongest candidates are admitted first, up to the cap. `unseen` maps
    Devices we created that the watch has not shown yet to their class: they count
    toward the cap (with watch lag, each pass could otherwise add up to
    `max_creates` past it).
    """
    plan = DiscoveryPlan()
    taken = {a.upper() for a in registered}
    best: dict[tuple[str, str], Candidate] = {}
    for c in candidates:
        cls = classes.get(c.device_class)
        if cls is None or c.rssi < cls.arrival_rssi or now - c.last_seen > CANDIDATE_MAX_AGE:
            continue
        name = device_name(cls.name, c.address)
        if c.address in taken or name in discovered or name in (unseen or {}):
            continue
        key = (cls.name, c.address)
        have = best.get(key)
        if have is None or (c.rssi, c.node) > (have.rssi, have.node):
            best[key] = c
    count: dict[str, int] = {}
    for d in discovered.values():
        count[d.device_class] = count.get(d.device_class, 0) + 1
    for name, cls_name in (unseen or {}).items():
        if name not in discovered:
            count[cls_name] = count.get(cls_name, 0) + 1
    addresses: set[str] = set()
    for c in sorted(best.values(), key=lambda c: (-c.rssi, c.device_class, c.address)):
        cls = classes[c.device_class]
        if count.get(cls.name, 0) >= cls.max_devices:
            plan.over_cap[cls.name] = plan.over_cap.get(cls.name, 0) + 1
            continue
        if len(plan.create) >= max_creates or c.address in addresses:
            continue  # next pass (one address, one class: the first in order)
        addresses.add(c.address)
        count[cls.name] = count.get(cls.name, 0) + 1
        approval = APPROVAL_PENDING if cls.admission == APPROVE else APPROVAL_APPROVED
        plan.create.append(
            NewDevice(device_name(cls.name, c.address), c.address, cls.name, approval, c.node)
        )
    for d in sorted(discovered.values(), key=lambda d: d.name):
        cls = classes.get(d.device_class)
        if cls is None:
            continue  # the class is gone: the garbage collector takes its Devices
        if now - max(last_heard.get(d.name, d.created), d.created) >= cls.forget_after:
            plan.forget.append(d.name)
    return plan


def new_device(new: NewDevice, cls: DeviceClass) -> dict[str, Any]:
    """The Device object for a candidate, owned by its class."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": new.name,
            "labels": {**MANAGED_BY, CLASS_LABEL: cls.name, APPROVAL_LABEL: new.approval},
            "ownerReferences": [
                {"apiVersion": API_VERSION, "kind": CLASS_KIND, "name": cls.name, "uid": cls.uid}
            ],
        },
        "spec": {"address": new.address},
    }


def function_deployments(cls: DeviceClass, device: Discovered) -> list[dict[str, Any]]:
    """The Deployments of `device`'s functions: the class's templates with the device
    annotation and label filled in, owned by the Device (a cluster-scoped owner of a
    namespaced dependent: the garbage collector removes them with the Device)."""
    out = []
    for fn in cls.functions:
        spec = copy.deepcopy(dict(fn.spec))
        template = spec.setdefault("template", {})
        meta = template.setdefault("metadata", {})
        meta.setdefault("labels", {})[DEVICE_ANNOTATION] = device.name
        meta.setdefault("annotations", {})[DEVICE_ANNOTATION] = device.name
        selector = spec.setdefault("selector", {})
        selector.setdefault("matchLabels", {})[DEVICE_ANNOTATION] = device.name
        labels = {**MANAGED_BY, CLASS_LABEL: cls.name, DEVICE_ANNOTATION: device.name}
        out.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": f"{fn.name}-{device.name}",
                    "namespace": fn.namespace,
                    "labels": labels,
                    "annotations": {DEVICE_ANNOTATION: device.name},
                    "ownerReferences": [
                        {
                            "apiVersion": API_VERSION,
                            "kind": KIND,
                            "name": device.name,
                            "uid": device.uid,
                            "controller": True,
                        }
                    ],
                },
                "spec": spec,
            }
        )
    return out


@dataclass(slots=True)
class LifecyclePlan:
    place: list[str] = field(default_factory=list)  # create or restore their functions
    stow: list[str] = field(default_factory=list)  # park or delete their functions
    revoke: list[str] = field(default_factory=list)  # denied: delete their functions


def plan_lifecycle(
    classes: Mapping[str, DeviceClass],
    discovered: Mapping[str, Discovered],
    newest_sighting: Mapping[str, float],
    last_heard: Mapping[str, float],
    now: float,
    placed: set[str],
    stowed: set[str],
    forgotten: Iterable[str] = (),
    revoked: AbstractSet[str] = frozenset(),
) -> LifecyclePlan:
    """Which approved Devices get their functions (back) and which lose them now.

    `newest_sighting`: a discovered Device's newest sighting a labelled gateway lists
    (absent: none). A Device is heard while that sighting is younger than its class's
    `awayAfter`, away once `last_heard` is that old. `placed` and `stowed` are the
    Device uids done so this term: each step is taken once per change of state (and
    once more per term, which a new leader needs and finds already done). A Device
    denied after it was approved (the verb does not ask what it was) loses its
    functions once per term (`revoked`: the uids done), parked ones included; a
    pending one never had any, and one whose approval label is anything else (removed
    or mistyped by hand) is left as it is.
    """
    plan = LifecyclePlan()
    gone = set(forgotten)
    for device in sorted(discovered.values(), key=lambda d: d.name):
        cls = classes.get(device.device_class)
        if cls is None or device.approval == APPROVAL_PENDING or not device.uid:
            continue
        if device.name in gone:
            continue
        if device.approval == APPROVAL_DENIED:
            if device.uid not in revoked:
                plan.revoke.append(device.name)
            continue
        if device.approval != APPROVAL_APPROVED:
            continue
        seen = newest_sighting.get(device.name)
        if seen is not None and now - seen < cls.away_after:
            # Not before a gateway tracks it as a Device: a pod created earlier would
            # find no gateway hearing it and fall back to another tier.
            if device.uid not in placed:
                plan.place.append(device.name)
        elif now - last_heard.get(device.name, now) >= cls.away_after and device.uid not in stowed:
            plan.stow.append(device.name)
    return plan
