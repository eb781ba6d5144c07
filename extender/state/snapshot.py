"""The frozen picture of the world the scorer reads: nodes, devices and node load.

Sources (Kubernetes watches, the Prometheus refresher, the simulator's state file)
build new snapshots; nothing mutates one after it is published, so a request can
read it without locks while a refresher swaps in the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from cloud4iot.vocabulary import ARCH_LABEL, TIER_LABEL
from extender.state.resources import NodeUse, amounts

TIERS = ("gateway", "edge", "cloud")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What placement needs to know about a node, extracted once from its object."""

    name: str
    tier: str | None
    arch: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    # What kube-scheduler's own filters read besides labels, kept so that admission
    # narrowing (extender/admission) never offers a node the scheduler would refuse:
    # (key, value, effect) of NoSchedule/NoExecute taints, and spec.unschedulable.
    taints: tuple[tuple[str, str, str], ...] = ()
    unschedulable: bool = False
    # status.allocatable in scheduler units (resources.py); None: the node reports
    # none (or a malformed one), and admission does not check its room.
    allocatable: Mapping[str, int] | None = None

    @classmethod
    def from_node(cls, node: Mapping[str, Any]) -> NodeFacts:
        """Build from a Kubernetes Node as a JSON dict; raises ValueError without a name."""
        meta = node.get("metadata")
        if not isinstance(meta, Mapping):
            raise ValueError("node has no metadata")
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("node has no metadata.name")
        raw = meta.get("labels")
        # Not copied (full-Node requests carry thousands of nodes): the label dict
        # is the object's own, and objects are replaced, never mutated, by sources.
        labels: Mapping[str, str] = raw if isinstance(raw, Mapping) else _EMPTY
        spec = node.get("spec")
        spec = spec if isinstance(spec, Mapping) else _EMPTY
        return cls(
            name=name,
            tier=labels.get(TIER_LABEL),
            arch=labels.get(ARCH_LABEL),
            labels=labels,
            taints=_hard_taints(spec.get("taints")),
            unschedulable=spec.get("unschedulable") is True,
            allocatable=_allocatable(node.get("status")),
        )


def _allocatable(status: Any) -> Mapping[str, int] | None:
    raw = status.get("allocatable") if isinstance(status, Mapping) else None
    if not isinstance(raw, Mapping) or not raw:
        return None
    try:
        return MappingProxyType(amounts(raw))
    except ValueError:
        return None


_HARD_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


def _hard_taints(raw: Any) -> tuple[tuple[str, str, str], ...]:
    """The taints that keep an untolerating pod off a node (PreferNoSchedule does not)."""
    if not isinstance(raw, list):
        return ()
    return tuple(
        (str(t.get("key") or ""), str(t.get("value") or ""), str(t["effect"]))
        for t in raw
        if isinstance(t, Mapping) and t.get("effect") in _HARD_EFFECTS
    )


@dataclass(frozen=True, slots=True)
class Sighting:
    """One gateway's report of how well it hears a device."""

    node: str
    rssi: float
    last_seen: float  # epoch seconds; for a report entry, when its gateway was last alive
    # From a GatewayReport: the gateway lists only what it hears now, so an entry that
    # is old but still listed means its gateway went silent, not that the device left.
    reported: bool = False

    def seen_at(self, last_seen: float) -> Sighting:
        """``replace(self, last_seen=...)`` without its scan of the fields: the report
        index refreshes every entry of a gateway per Lease renewal (replay's profile).
        tests/state/test_snapshot_copies.py keeps it equal to ``replace``."""
        return Sighting(self.node, self.rssi, last_seen, self.reported)


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """A Device object reduced to what the scorer reads."""

    name: str
    address: str | None
    sightings: Mapping[str, Sighting]
    nearest: str | None = None  # status.nearest.node, decided centrally with hysteresis
    nearest_since: float | None = None  # status.nearest.since: when that decision was taken
    rssi_enter: float | None = None  # per-device threshold overriding the class's

    def with_sightings(self, sightings: Mapping[str, Sighting]) -> DeviceFacts:
        """``replace(self, sightings=...)`` without its scan of the fields: a report's
        apply merges each changed device (replay's profile, BENCHMARKS.md).
        tests/state/test_snapshot_copies.py keeps it equal to ``replace``."""
        return DeviceFacts(
            self.name,
            self.address,
            sightings,
            self.nearest,
            self.nearest_since,
            self.rssi_enter,
        )


@dataclass(frozen=True, slots=True)
class LoadSample:
    """Utilisation of a node in 0..1 and when it was measured."""

    cpu: float | None
    memory: float | None
    at: float  # epoch seconds of the query that produced it

    @property
    def peak(self) -> float | None:
        cpu, memory = self.cpu, self.memory
        if cpu is None:
            return memory
        return cpu if memory is None or cpu >= memory else memory


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the scorer may read about the cluster at one moment."""

    nodes: Mapping[str, NodeFacts] = field(default_factory=dict)
    devices: Mapping[str, DeviceFacts] = field(default_factory=dict)
    load: Mapping[str, LoadSample] = field(default_factory=dict)
    # Whether the node / device caches completed their first full list.
    nodes_synced: bool = False
    devices_synced: bool = False
    # Time of the last successful Prometheus refresh (epoch seconds), None = never.
    load_refreshed_at: float | None = None
    # What the pods bound or nominated to each node request (admission's room check);
    # a node absent has none. pods_synced: False until the pod watch has listed.
    usage: Mapping[str, NodeUse] = field(default_factory=dict)
    pods_synced: bool = True

    def with_nodes(self, nodes: Mapping[str, NodeFacts], synced: bool = True) -> Snapshot:
        return replace(self, nodes=nodes, nodes_synced=synced)

    def with_devices(self, devices: Mapping[str, DeviceFacts], synced: bool = True) -> Snapshot:
        return replace(self, devices=devices, devices_synced=synced)

    def with_usage(self, usage: Mapping[str, NodeUse], synced: bool = True) -> Snapshot:
        return replace(self, usage=usage, pods_synced=synced)

    def with_load(self, load: Mapping[str, LoadSample], refreshed_at: float) -> Snapshot:
        return replace(self, load=load, load_refreshed_at=refreshed_at)
