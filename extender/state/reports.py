"""GatewayReports (gatewayreports.cloud4iot.io) merged into the Devices the scorer reads.

Each gateway's monitor writes one report, named as its node, listing every device it
hears (docs/gateway-writes.md, section 1). The scorer, the nearest writer and the
rebalancer keep reading `DeviceFacts.sightings` (node -> Sighting); this module builds
that per-device index from the reports, incrementally: a report event touches only the
devices it lists now or listed before.

Only gateways vote: a report counts only while its node is labelled
`node-restriction.kubernetes.io/cloud4iot-gateway` (GATEWAY_LABEL; kubelets cannot set
it on themselves). The elected extender creates reports only for such nodes and the
apiserver lets a monitor write only its own node's report; ignoring the rest here is
defence in depth and what the extender can check on its own.

Freshness comes from the gateway, not the entry (docs/gateway-writes.md, section 2): a
monitor writes its report only when what it hears changes and renews its Lease every
10 s, so an entry counts as seen when its gateway was last seen alive (`LeaseFacts`,
timed by our own clock), or at its own lastSeen if that is newer (a monitor of the
previous release, with no Lease, refreshes lastSeen every 10 s instead). Such entries
are marked `reported`: old but still listed means the gateway went silent, and readers
treat the device as unknown, not away.

Sightings a Device's own `status.sightings` still carries (the previous release's
write path; monitors may no longer write there, admins still can) are merged in for
this release, from labelled gateways only; a report's entry for the same node wins
when it is newer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud4iot.devices import parse_time
from cloud4iot.vocabulary import GATEWAY_LABEL
from extender.state.devices import FirstRead, capped
from extender.state.liveness import LeaseFacts, heard_at, lapsed, renewed
from extender.state.snapshot import DeviceFacts, NodeFacts, Sighting


@dataclass(frozen=True, slots=True)
class Candidate:
    """An unregistered device a gateway heard matching a DeviceClass (issue 25)."""

    node: str
    address: str
    device_class: str
    rssi: int
    last_seen: float


@dataclass(frozen=True, slots=True)
class ReportFacts:
    """One gateway's report: device -> what the gateway hears of it."""

    node: str
    sightings: Mapping[str, Sighting]
    candidates: tuple[Candidate, ...] = ()


def report_facts(
    obj: Mapping[str, Any], observed_at: float | None = None, ahead: FirstRead | None = None
) -> ReportFacts:
    """Facts of a GatewayReport as a JSON dict; malformed entries are skipped.

    `observed_at` caps each lastSeen, as for Devices: a gateway whose clock runs
    ahead must not keep a device "heard" after it left; with `ahead`, at the first
    read of that value (`FirstRead`). ValueError without a name.
    """
    meta = obj.get("metadata")
    node = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(node, str) or not node:
        raise ValueError("report has no metadata.name")
    status = obj.get("status")
    entries = status.get("sightings") if isinstance(status, Mapping) else None
    sightings: dict[str, Sighting] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        device, rssi = entry.get("device"), entry.get("rssi")
        seen = parse_time(entry.get("lastSeen"))
        if (
            isinstance(device, str)
            and isinstance(rssi, int | float)
            and not isinstance(rssi, bool)
            and seen is not None
        ):
            seen = capped(seen, observed_at, ahead, ("report", node, device), entry["lastSeen"])
            sightings[device] = Sighting(node=node, rssi=float(rssi), last_seen=seen, reported=True)
    raw = status.get("candidates") if isinstance(status, Mapping) else None
    return ReportFacts(
        node=node, sightings=sightings, candidates=_candidates(node, raw, observed_at, ahead)
    )


def _candidates(
    node: str, entries: Any, observed_at: float | None, ahead: FirstRead | None
) -> tuple[Candidate, ...]:
    out: list[Candidate] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        address, cls, rssi = entry.get("address"), entry.get("deviceClass"), entry.get("rssi")
        seen = parse_time(entry.get("lastSeen"))
        if (
            isinstance(address, str)
            and isinstance(cls, str)
            and isinstance(rssi, int)
            and not isinstance(rssi, bool)
            and seen is not None
        ):
            key = ("candidate", node, address)
            seen = capped(seen, observed_at, ahead, key, entry["lastSeen"])
            out.append(Candidate(node, address.upper(), cls, rssi, seen))
    return tuple(out)


def gateway_nodes(nodes: Mapping[str, NodeFacts]) -> frozenset[str]:
    """The nodes whose reports count: those labelled as gateways by the admin."""
    return frozenset(name for name, facts in nodes.items() if GATEWAY_LABEL in facts.labels)


Observe = Callable[[str, DeviceFacts | None, DeviceFacts | None], None]


@dataclass(slots=True, eq=False)
class SightingIndex:
    """Devices (from their objects) with the sightings of the gateways' reports merged in.

    `merged` is what snapshots publish; `observe` sees each merged Device change.
    """

    observe: Observe | None = None
    devices: dict[str, DeviceFacts] = field(default_factory=dict)  # as their objects say
    reports: dict[str, ReportFacts] = field(default_factory=dict)
    gateways: frozenset[str] = frozenset()
    by_device: dict[str, dict[str, Sighting]] = field(default_factory=dict)  # counted only
    merged: dict[str, DeviceFacts] = field(default_factory=dict)
    alive_at: dict[str, float] = field(default_factory=dict)  # node -> last seen alive (ours)

    def observe_device(self, name: str, old: DeviceFacts | None, new: DeviceFacts | None) -> None:
        if new is None:
            self.devices.pop(name, None)
        else:
            self.devices[name] = new
        self._refresh(name)

    def observe_report(self, node: str, old: ReportFacts | None, new: ReportFacts | None) -> None:
        if new is None:
            self.reports.pop(node, None)
        else:
            self.reports[node] = new
        if node not in self.gateways:
            return  # never counted, so nothing to change
        before = old.sightings if old else {}
        after = new.sightings if new else {}
        alive = self.alive_at.get(node)
        for device in before.keys() | after.keys():
            sighting = after.get(device)
            if sighting is not None and sighting == before.get(device):
                # A whole-report write changes few of its entries: an unchanged one is
                # skipped unless its freshness moved (the Lease went meanwhile).
                held = self.by_device.get(device, {}).get(node)
                seen = sighting.last_seen
                if held is not None and held.last_seen == heard_at(seen, alive):
                    continue
            heard = self.by_device.setdefault(device, {})
            if sighting is None:
                heard.pop(node, None)
                if not heard:
                    del self.by_device[device]
            else:
                heard[node] = self._fresh(sighting)
            self._refresh(device)

    def observe_lease(self, node: str, old: LeaseFacts | None, new: LeaseFacts | None) -> None:
        """A gateway's Lease changed: a renewal refreshes every entry of its report.

        A Lease seen for the first time (our start) counts as a renewal unless its own
        renewTime says it lapsed long ago: a gateway dead for an hour, its Lease and
        report left behind, must not vote again at its old RSSI because we restarted
        (found in review, 2026-12-07). Its clock is trusted only that far: a live
        gateway whose clock runs that far behind is counted at its next renewal."""
        if new is None:
            self.alive_at.pop(node, None)  # its entries keep their own lastSeen and age
            return
        if renewed(old, new) and (old is not None or not lapsed(new)):
            self.alive_at[node] = new.observed_at
            self._refresh_gateway(node)

    def relisted(self, leases: Mapping[str, LeaseFacts], at: float) -> None:
        """Our view of the Leases resumed (a relist after a watch failure, e.g. an
        apiserver outage, when no monitor could renew): every gateway that was alive
        when our view broke counts as alive now, so each gets the policy's sighting age
        to renew before its entries go stale (and stale entries are unknown, never
        absent). One that had already lapsed then gets no such grace."""
        before = [t for t in self.alive_at.values() if t < at]  # (not renewed in this list)
        if not before:
            return
        broke = max(before)  # the last renewal we saw: about when our view broke
        for node, lease in leases.items():
            held = self.alive_at.get(node)
            if held is not None and broke - lease.duration <= held < at:
                self.alive_at[node] = at
                self._refresh_gateway(node)

    def _fresh(self, sighting: Sighting) -> Sighting:
        at = heard_at(sighting.last_seen, self.alive_at.get(sighting.node))
        return sighting if at == sighting.last_seen else sighting.seen_at(at)

    def _refresh_gateway(self, node: str) -> None:
        report = self.reports.get(node)
        if report is None or node not in self.gateways:
            return
        for device, sighting in report.sightings.items():
            self.by_device.setdefault(device, {})[node] = self._fresh(sighting)
            self._refresh(device)

    def set_nodes(self, nodes: Mapping[str, NodeFacts]) -> bool:
        """Follow the gateway label; True when the set of counted gateways changed."""
        gateways = gateway_nodes(nodes)
        if gateways == self.gateways:
            return False
        self.gateways = gateways
        self.by_device = {}
        for node in gateways:
            report = self.reports.get(node)
            for device, sighting in (report.sightings if report else {}).items():
                self.by_device.setdefault(device, {})[node] = self._fresh(sighting)
        for name in list(self.devices.keys() | self.merged.keys()):
            self._refresh(name)
        return True

    def _refresh(self, name: str) -> None:
        old = self.merged.get(name)
        base = self.devices.get(name)
        if base is None:
            if old is None:
                return
            del self.merged[name]
            new: DeviceFacts | None = None
        else:
            new = merge(base, self.by_device.get(name), self.gateways)
            if new == old:
                return
            self.merged[name] = new
        if self.observe is not None:
            self.observe(name, old, new)


def merge(
    device: DeviceFacts, reported: Mapping[str, Sighting] | None, gateways: frozenset[str]
) -> DeviceFacts:
    """`device` with the reports' sightings; per node, the newer of the two wins. The
    Device's own (legacy) entries count only from `gateways`."""
    legacy = device.sightings
    if legacy and not legacy.keys() <= gateways:
        legacy = {n: s for n, s in legacy.items() if n in gateways}
        device = device.with_sightings(legacy)
    if not reported:
        return device
    if not legacy:
        return device.with_sightings(dict(reported))
    sightings = dict(legacy)
    for node, sighting in reported.items():
        have = sightings.get(node)
        if have is None or sighting.last_seen >= have.last_seen:
            sightings[node] = sighting
    return device.with_sightings(sightings)
