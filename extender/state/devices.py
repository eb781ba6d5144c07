"""Device objects (devices.cloud4iot.io) reduced to the DeviceFacts the scorer reads."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud4iot.devices import parse_time
from extender.state.snapshot import DeviceFacts, Sighting

_NUMBERS = (int, float)


def _parse_sighting(node: Any, rssi: Any, last_seen: Any) -> Sighting | None:
    """One status.sightings entry, or None when malformed."""
    seen = parse_time(last_seen)
    if (
        isinstance(node, str)
        and isinstance(rssi, int | float)
        and not isinstance(rssi, bool)
        and seen is not None
    ):
        return Sighting(node=node, rssi=float(rssi), last_seen=seen)
    return None


_sighting = functools.lru_cache(maxsize=65536)(_parse_sighting)


def gateway_of(key: tuple[str, str, str]) -> str:
    """The gateway that wrote the value a FirstRead key names: ("device", device, node)
    for a Device's legacy entry, ("report" | "candidate", node, subject) for a report's."""
    return key[2] if key[0] == "device" else key[1]


@dataclass(slots=True)
class FirstRead:
    """When we first read each lastSeen that was ahead of our clock (its writer's clock
    runs ahead), so the same written value is capped at that first read on every later
    read: capped at each read instead, an unchanged object delivered again (a relist,
    any Device event, our own status writes) made a silent gateway's entry "seen now",
    and a gateway gone for good kept the device (found in review, 2026-12-07). One per
    reflector; a value forgotten is capped once more when read again.

    Bounded per gateway (oldest first): one gateway writing ever-new future stamps
    (1024 sightings and 64 candidates a report, each write new keys) evicts only its
    own values, never another gateway's, whose silent entries a relist would otherwise
    make fresh again (security review, 2026-12-08). `gateways` bounds the gateways
    remembered (node names: only admins add them); the oldest added goes first. `limit`
    bounds all values together (~12 MiB): past it the gateway holding the most gives up
    its oldest, so a flood still evicts only the flooder's."""

    # (plain dicts, oldest first: this module is part of the base install, where the
    # extender's extra cachetools is not)
    first: dict[str, dict[tuple[str, str, str, str], float]] = field(default_factory=dict)
    per_gateway: int = 4096  # above one report's 1088 entries and its legacy ones
    gateways: int = 4096
    limit: int = 65536
    size: int = 0

    def cap(self, key: tuple[str, str, str], raw: str, seen: float, observed_at: float) -> float:
        if seen <= observed_at:
            return seen
        gateway = gateway_of(key)
        mine = self.first.get(gateway)
        if mine is None:
            if len(self.first) >= self.gateways:
                self.size -= len(self.first.pop(next(iter(self.first))))
            mine = self.first[gateway] = {}
        k = (*key, raw)
        first = mine.get(k)
        if first is None:
            if len(mine) >= self.per_gateway:
                del mine[next(iter(mine))]
                self.size -= 1
            elif self.size >= self.limit:
                largest = max(self.first.values(), key=len)
                del largest[next(iter(largest))]
                self.size -= 1
            mine[k] = first = observed_at
            self.size += 1
        elif observed_at < first:
            mine[k] = first = observed_at
        return first


def capped(
    seen: float,
    observed_at: float | None,
    ahead: FirstRead | None,
    key: tuple[str, str, str],
    raw: Any,
) -> float:
    """A lastSeen (`raw` as written) capped at when we read it: at this read, or with
    `ahead` at the first read of that value."""
    if observed_at is None or seen <= observed_at:
        return seen
    return observed_at if ahead is None else ahead.cap(key, str(raw), seen, observed_at)


def device_facts(
    obj: Mapping[str, Any], observed_at: float | None = None, ahead: FirstRead | None = None
) -> DeviceFacts:
    """Build DeviceFacts from a Device as a JSON dict; malformed sightings are skipped.

    `observed_at` (when the watch delivered the object) caps each sighting's
    lastSeen: a gateway whose clock runs ahead must not keep a device "heard"
    after it left; with `ahead`, at the first read of that value. Raises ValueError
    when the object has no name.
    """
    meta = obj.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        raise ValueError("device has no metadata.name")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    spec = spec if isinstance(spec, Mapping) else {}
    status = status if isinstance(status, Mapping) else {}

    sightings: dict[str, Sighting] = {}
    raw_sightings = status.get("sightings") or []
    if isinstance(raw_sightings, list):
        for entry in raw_sightings:
            if not isinstance(entry, Mapping):
                continue
            node, rssi, last_seen = entry.get("node"), entry.get("rssi"), entry.get("lastSeen")
            if type(node) is str and type(rssi) in _NUMBERS and type(last_seen) is str:
                # The common case, cached: a Device's other gateways' entries come back
                # unchanged on every event of it.
                sighting = _sighting(node, rssi, last_seen)
            else:
                sighting = _parse_sighting(node, rssi, last_seen)
            if sighting is None:
                continue
            if observed_at is not None and sighting.last_seen > observed_at:
                key = ("device", name, sighting.node)
                seen = capped(sighting.last_seen, observed_at, ahead, key, last_seen)
                sighting = Sighting(node=sighting.node, rssi=sighting.rssi, last_seen=seen)
            sightings[sighting.node] = sighting

    nearest_raw = status.get("nearest")
    nearest = nearest_raw.get("node") if isinstance(nearest_raw, Mapping) else None
    since = parse_time(nearest_raw.get("since")) if isinstance(nearest_raw, Mapping) else None
    thresholds = spec.get("rssi")
    enter = thresholds.get("enter") if isinstance(thresholds, Mapping) else None
    address = spec.get("address")
    return DeviceFacts(
        name=name,
        address=address if isinstance(address, str) else None,
        sightings=sightings,
        nearest=nearest if isinstance(nearest, str) else None,
        nearest_since=since if isinstance(nearest, str) else None,
        rssi_enter=float(enter) if isinstance(enter, int | float) else None,
    )
