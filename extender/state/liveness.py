"""Gateway liveness: the Lease each gateway monitor renews (docs/gateway-writes.md, 2).

One coordination.k8s.io Lease per gateway, named as its node, in the monitors'
namespace, held by that node (the admission policy cloud4iot-gateway-leases lets a
monitor write no other). A renewal is timed by the reader's own clock, when it sees
``renewTime`` change (as the node lifecycle controller does with node Leases): a
gateway's clock that runs ahead or behind changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloud4iot.devices import parse_time


@dataclass(frozen=True, slots=True)
class LeaseFacts:
    """One gateway's Lease as the reader saw it."""

    node: str
    renew_time: str  # as written: only compared for change, never trusted as a time
    duration: float  # leaseDurationSeconds
    observed_at: float  # the reader's clock when it read this version


def lease_facts(obj: Mapping[str, Any], observed_at: float) -> LeaseFacts:
    """Facts of a gateway Lease; ValueError when it is not one a monitor holds for
    its own node (a Lease held by another name, or never renewed)."""
    meta = obj.get("metadata")
    node = meta.get("name") if isinstance(meta, Mapping) else None
    spec = obj.get("spec")
    if not isinstance(node, str) or not node or not isinstance(spec, Mapping):
        raise ValueError("not a gateway Lease (no name or no spec)")
    if spec.get("holderIdentity") != node:
        raise ValueError(f"held by {spec.get('holderIdentity')!r}, not by its node")
    renew, duration = spec.get("renewTime"), spec.get("leaseDurationSeconds")
    if not isinstance(renew, str) or not renew:
        raise ValueError("never renewed")
    if not isinstance(duration, int) or isinstance(duration, bool) or duration <= 0:
        raise ValueError(f"leaseDurationSeconds {duration!r} is not a positive integer")
    return LeaseFacts(
        node=node, renew_time=renew, duration=float(duration), observed_at=observed_at
    )


def renewed(old: LeaseFacts | None, new: LeaseFacts | None) -> bool:
    """Whether this event shows the gateway alive: a new renewal, or a Lease seen for
    the first time (the reader starting gives every gateway one lease to renew)."""
    return new is not None and (old is None or old.renew_time != new.renew_time)


# How far a gateway's clock may run behind ours before its Lease, seen first at our
# start, counts as lapsed (beyond its duration). Only the first sight uses renewTime.
START_SKEW = 60.0


def lapsed(lease: LeaseFacts) -> bool:
    """Whether a Lease seen for the first time says, by its own renewTime, that it
    lapsed long before we read it (unparsable: not lapsed, as before)."""
    renew = parse_time(lease.renew_time)
    return renew is not None and lease.observed_at - renew > lease.duration + START_SKEW


def heard_at(last_seen: float, alive_at: float | None) -> float:
    """When an entry of a gateway counts as last heard: its own lastSeen, or the
    gateway's last renewal we saw if later, since a live gateway lists only what it
    heard within its TTL. Sightings and discovery's candidates both age from this."""
    return last_seen if alive_at is None or alive_at <= last_seen else alive_at
