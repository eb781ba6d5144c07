"""The DeviceClass contract (deviceclasses.cloud4iot.io) both deployables share.

A DeviceClass says which BLE adverts of unregistered devices are worth reporting (the
discovery filter, read by the gateway monitors), and what the elected extender does
with a reported candidate (admission mode, cap, `forgetAfter`, the function templates).
Pure and standard library only: the gateway image imports it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloud4iot.devices import RSSI_MIN

CLASS_PLURAL = "deviceclasses"
CLASS_KIND = "DeviceClass"
# A Device made from a candidate is named <class>-<address as 12 hex digits>; a class
# name of at most 40 characters keeps that a valid label value (63).
CLASS_NAME_MAX = 40

# The Bluetooth base UUID: a 16-bit service UUID 0x180D is 0000180d-0000-1000-8000-00805f9b34fb.
_BASE_SUFFIX = "-0000-1000-8000-00805f9b34fb"
_DURATION = re.compile(r"^([0-9]{1,7})(s|m|h)$")
_UNITS = {"s": 1, "m": 60, "h": 3600}

AUTO, APPROVE = "auto", "approve"
# What a class does with a Device's functions once no gateway has heard it for awayAfter.
PARK, DELETE = "park", "delete"
AWAY_AFTER = 120.0  # the default awayAfter (or forgetAfter, when shorter)


def full_uuid(value: str) -> str:
    """A service UUID in its 128-bit lower-case form (16- and 32-bit short forms accepted)."""
    text = value.strip().lower().removeprefix("0x")
    if re.fullmatch(r"[0-9a-f]{4}|[0-9a-f]{8}", text):
        return text.rjust(8, "0") + _BASE_SUFFIX
    if re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text):
        return text
    raise ValueError(f"not a service UUID: {value!r}")


def parse_duration(value: str) -> float:
    """'30s', '10m', '2h' -> seconds."""
    m = _DURATION.match(value)
    if m is None:
        raise ValueError(f"not a duration (<digits>s|m|h): {value!r}")
    return float(int(m.group(1)) * _UNITS[m.group(2)])


def is_resolvable_private(address: str) -> bool:
    """A random address whose two top bits are 01: rotates, followable only with its IRK."""
    return (int(address[:2], 16) >> 6) == 0b01


@dataclass(frozen=True, slots=True)
class Filter:
    """What an advert must carry to match (every given part; any of the service UUIDs)."""

    service_uuids: frozenset[str] = frozenset()
    manufacturer_id: int | None = None
    manufacturer_prefix: bytes = b""
    local_name: str | None = None  # a glob (fnmatch), case-sensitive
    address_types: frozenset[str] = frozenset()  # empty: any
    resolvable_private: bool = False  # rotating addresses ignored unless allowed

    def matches(
        self,
        *,
        address: str,
        service_uuids: Iterable[str],
        manufacturer_data: Mapping[int, bytes],
        name: str | None,
        address_type: str | None,
    ) -> bool:
        if self.address_types and address_type not in self.address_types:
            return False
        rotating = address_type == "random" and is_resolvable_private(address)
        if rotating and not self.resolvable_private:
            return False
        if self.service_uuids:
            heard = set()
            for uuid in service_uuids:
                try:
                    heard.add(full_uuid(uuid))
                except ValueError:
                    continue
            if not heard & self.service_uuids:
                return False
        if self.manufacturer_id is not None:
            data = manufacturer_data.get(self.manufacturer_id)
            if data is None or not data.startswith(self.manufacturer_prefix):
                return False
        return self.local_name is None or (
            name is not None and fnmatch.fnmatchcase(name, self.local_name)
        )


@dataclass(frozen=True, slots=True)
class FunctionTemplate:
    """One workload made per device: a Deployment `<name>-<device>` in `namespace`."""

    name: str
    namespace: str
    spec: Mapping[str, Any]  # a DeploymentSpec, as the admin wrote it


@dataclass(frozen=True, slots=True)
class DeviceClass:
    name: str
    uid: str
    filter: Filter
    arrival_rssi: int = RSSI_MIN
    admission: str = AUTO
    max_devices: int = 10
    forget_after: float = 600.0
    when_away: str = PARK  # park: scale to zero, restored when heard; delete: re-made then
    away_after: float = AWAY_AFTER
    functions: Sequence[FunctionTemplate] = field(default_factory=tuple)


# Where the extender fills in the device's label and annotation (discovery_plan's
# function_deployments): the CRD keeps a template's spec as written (preserve unknown
# fields), so these may be anything; each must be an object when present.
_FILLED = (
    ("selector",),
    ("selector", "matchLabels"),
    ("template",),
    ("template", "metadata"),
    ("template", "metadata", "labels"),
    ("template", "metadata", "annotations"),
)


def misshapen(spec: Mapping[str, Any]) -> str | None:
    """The first path the extender writes into that is present and not an object."""
    for path in _FILLED:
        node: Any = spec
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
        else:
            if not isinstance(node, Mapping):
                return "spec." + ".".join(path)
    return None


def parse_class(obj: Mapping[str, Any], observed_at: float = 0.0) -> DeviceClass:
    """A DeviceClass from its JSON object; ValueError when it cannot be used.

    The CRD validates the same; this is what a reader can check on its own (an object
    stored before a schema change, a hand-made test object). `observed_at` is unused
    (the reflectors' parse signature)."""
    try:
        return _parse_class(obj)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"DeviceClass: malformed ({type(exc).__name__}: {exc})") from exc


def _parse_class(obj: Mapping[str, Any]) -> DeviceClass:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name or len(name) > CLASS_NAME_MAX:
        raise ValueError(f"DeviceClass needs a name of 1..{CLASS_NAME_MAX} characters")
    uid = meta.get("uid") if isinstance(meta, Mapping) else None
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise ValueError(f"DeviceClass {name}: no spec")
    disc = spec.get("discovery")
    if not isinstance(disc, Mapping):
        raise ValueError(f"DeviceClass {name}: no spec.discovery")
    uuids = frozenset(full_uuid(u) for u in disc.get("serviceUUIDs") or [])
    manufacturer = disc.get("manufacturer")
    man_id: int | None = None
    prefix = b""
    if isinstance(manufacturer, Mapping):
        man_id = int(manufacturer["id"])
        prefix = bytes.fromhex(str(manufacturer.get("dataPrefix", "")))
    local_name = disc.get("localName")
    # A glob of wildcards only ("*", "?*") matches every advert that has a name: alone
    # it is no filter.
    named = isinstance(local_name, str) and bool(local_name.strip("*?"))
    if not uuids and man_id is None and not named:
        raise ValueError(
            f"DeviceClass {name}: the filter needs serviceUUIDs, manufacturer or a localName "
            "that is not wildcards only"
        )
    flt = Filter(
        service_uuids=uuids,
        manufacturer_id=man_id,
        manufacturer_prefix=prefix,
        local_name=local_name if isinstance(local_name, str) else None,
        address_types=frozenset(disc.get("addressTypes") or ()),
        resolvable_private=disc.get("resolvablePrivateAddresses") == "allow",
    )
    functions = tuple(
        FunctionTemplate(name=str(f["name"]), namespace=str(f["namespace"]), spec=f["spec"])
        for f in spec.get("functions") or []
        if isinstance(f, Mapping) and isinstance(f.get("spec"), Mapping)
    )
    for fn in functions:
        if (where := misshapen(fn.spec)) is not None:
            raise ValueError(f"DeviceClass {name}: function {fn.name}: {where} is not an object")
    admission = spec.get("admission", AUTO)
    if admission not in (AUTO, APPROVE):
        raise ValueError(f"DeviceClass {name}: admission is auto or approve")
    forget_after = parse_duration(str(spec.get("forgetAfter", "10m")))
    when_away = spec.get("whenAway", PARK)
    if when_away not in (PARK, DELETE):
        raise ValueError(f"DeviceClass {name}: whenAway is park or delete")
    away = spec.get("awayAfter")
    away_after = parse_duration(str(away)) if away is not None else min(AWAY_AFTER, forget_after)
    if away_after > forget_after:
        raise ValueError(f"DeviceClass {name}: awayAfter is longer than forgetAfter")
    # The CRD's pattern allows 0s: a Device heard this very pass would be forgotten
    # (deleted and made again from the candidate, over and over), or never placed.
    if away_after <= 0:
        raise ValueError(f"DeviceClass {name}: awayAfter and forgetAfter must be above 0s")
    return DeviceClass(
        name=name,
        uid=uid if isinstance(uid, str) else "",
        filter=flt,
        arrival_rssi=int(spec.get("arrivalRSSI", RSSI_MIN)),
        admission=admission,
        max_devices=int(spec.get("maxDevices", 10)),
        forget_after=forget_after,
        when_away=when_away,
        away_after=away_after,
        functions=functions,
    )


def device_name(device_class: str, address: str) -> str:
    """The Device a candidate becomes: one per class and address."""
    return f"{device_class}-{address.replace(':', '').lower()}"
