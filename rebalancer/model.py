"""The rebalancer's planning vocabulary: workloads, pods, moves, holds and memory.

Plain frozen data, no I/O. The planners (plan.py, repin.py) read and return these;
the evictor turns a Move into a rollout, an eviction or a scale, and its reason and
message into a Kubernetes Event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from extender.scoring import PodFacts

Fact = str | float | None


class Reason(StrEnum):
    """Why a function moves; the values are Kubernetes Event reasons."""

    ROAMING = "Roaming"  # to another gateway nearer its device
    OFFLOADING = "Offloading"  # up a tier, or off an overloaded node
    ONLOADING = "Onloading"  # back down a tier
    DEVICE_AWAY = "DeviceAway"  # no gateway hears its device
    DEVICE_BACK = "DeviceBack"  # a gateway hears its device again
    REPINNED = "Repinned"  # a pending pod whose admission pin went stale, recreated


class Action(StrEnum):
    ROLLOUT = "rollout"  # pod-template annotation: make-before-break
    EVICT = "evict"  # Eviction API: PodDisruptionBudgets hold
    PARK = "park"  # scale the Deployment to zero, saving its replica count
    UNPARK = "unpark"  # restore the saved replica count
    RECREATE = "recreate"  # evict a pending pod (uid precondition): its owner makes a new one


class Limit(StrEnum):
    """Which rule held a wanted move; bounded, so it can label metrics."""

    DWELL = "dwell"
    SETTLE = "settle"
    COOLDOWN_WORKLOAD = "cooldown-workload"
    COOLDOWN_DEVICE = "cooldown-device"
    NO_RETURN = "no-return"
    GLOBAL_RATE = "global-rate"
    NODE_RATE = "node-rate"
    ROLLOUT_IN_PROGRESS = "rollout-in-progress"
    NO_FEASIBLE_NODE = "no-feasible-node"
    NO_CONTROLLER = "no-controller"
    DEVICE_AWAY_KEEP = "device-away-keep"
    DEVICE_AWAY_WAIT = "device-away-wait"  # park: not away for deviceAwayAfter yet
    # No gateway hears the device fresh, but a gateway that went silent (its Lease not
    # renewed: monitor gone, node down, an apiserver outage) still lists it: unknown,
    # not away. No DeviceAway move and no park until it speaks again.
    GATEWAY_SILENT = "gateway-silent"
    PARK_NEEDS_DEPLOYMENT = "park-needs-deployment"
    UNKNOWN_NODE = "unknown-node"
    NOT_SYNCED = "not-synced"  # the node or Device caches have not listed everything yet
    # An optional move to a node that took a move its load data cannot show yet.
    TARGET_SETTLING = "target-settling"
    # An optional move of a replica of a replicated workload: its spread is the scheduler's.
    REPLICATED = "replicated"


class Kind(StrEnum):
    """The owner that recreates a pod. Report any other owner (a DaemonSet, a Job) as
    POD: nothing would recreate the pod elsewhere, so it is never moved."""

    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    REPLICA_SET = "ReplicaSet"
    POD = "Pod"  # bare


@dataclass(frozen=True, slots=True)
class Workload:
    kind: Kind
    namespace: str
    name: str
    # Deployment RollingUpdate with maxSurge > 0 and maxUnavailable 0: a rollout is
    # make-before-break (workloads.make_before_break)
    can_surge: bool = False
    replicas: int = 1
    settled: bool = True  # no rollout in progress, every replica up to date
    parked_replicas: int | None = None  # the replica count saved when parked

    @property
    def key(self) -> str:
        return f"{self.kind.value}/{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ManagedPod:
    uid: str
    name: str
    namespace: str
    node: str  # "" for a pending pod (a recreate)
    facts: PodFacts
    workload: Workload
    ready: bool = True
    deleting: bool = False
    # status.startTime: tells "the gateway has room again" (Onloading) from "the
    # device is back" (DeviceBack) when a function returns to its device's gateway.
    started: float | None = None


@dataclass(frozen=True, slots=True)
class MoveRecord:
    workload: str  # Workload.key
    device: str | None
    from_node: str | None  # None for an unpark
    to_node: str | None  # expected target; None for a park
    reason: Reason
    at: float


@dataclass(frozen=True, slots=True)
class Pending:
    """A move wanted since `since`; it must stay wanted (same target, reason) for the dwell."""

    target: str
    reason: Reason
    since: float


@dataclass(frozen=True, slots=True)
class Memory:
    """What the planner remembers between plans; the actor keeps it for its term."""

    pending: Mapping[str, Pending] = field(default_factory=dict)  # by pod uid
    moves: tuple[MoveRecord, ...] = ()  # recent, pruned to the longest window
    # Park timer for devices with no sighting at all (never heard, or deleted).
    unheard_since: Mapping[str, float] = field(default_factory=dict)

    def shifted(self, by: float) -> Memory:
        """Every stamp moved by `by` seconds (the wall clock stepped by that much)."""
        return Memory(
            pending={u: replace(p, since=p.since + by) for u, p in self.pending.items()},
            moves=tuple(replace(m, at=m.at + by) for m in self.moves),
            unheard_since={d: t + by for d, t in self.unheard_since.items()},
        )

    def forget(self, uids: Iterable[str] = (), devices: Iterable[str] = ()) -> Memory:
        """Without the pending moves of pods that are gone and timers of devices that are."""
        drop_uids, drop_devices = set(uids), set(devices)
        return Memory(
            pending={u: p for u, p in self.pending.items() if u not in drop_uids},
            moves=self.moves,
            unheard_since={d: t for d, t in self.unheard_since.items() if d not in drop_devices},
        )


@dataclass(frozen=True, slots=True)
class Move:
    action: Action
    reason: Reason
    workload: Workload
    pod: ManagedPod | None  # None for an unpark
    from_node: str | None
    to_node: str | None  # where the scheduler is expected to put it; None for a park
    facts: Mapping[str, Fact]  # see plan.FACTS; a recreate's: why

    def message(self) -> str:
        """One line for the Event and the log."""
        f = self.facts
        if self.action is Action.RECREATE and self.pod is not None:
            return f"recreate pending pod {self.pod.namespace}/{self.pod.name}: {f.get('why')}"
        subject = (
            self.workload.key if self.pod is None else f"{self.workload.key} pod {self.pod.name}"
        )
        route = f"{self.from_node or '-'} -> {self.to_node or '-'}"
        parts = [f"{self.reason.value} ({self.action.value}) {subject}: {route}"]
        if f.get("why"):
            parts.append(str(f["why"]))
        # "-" for the side a park or unpark does not have; "?" for a fact not known.
        here, there = self.from_node is not None, self.to_node is not None
        parts.append(f"score {_side(f, 'scoreFrom', here)} -> {_side(f, 'scoreTo', there)}")
        if f.get("device"):
            rssi_from, rssi_to = (
                _side(f, "rssiFrom", here, " dBm"),
                _side(f, "rssiTo", there, " dBm"),
            )
            parts.append(f"device {f['device']} rssi {rssi_from} -> {rssi_to}")
        load_from, load_to = _side(f, "loadFrom", here, "%"), _side(f, "loadTo", there, "%")
        parts.append(f"load {load_from} -> {load_to}")
        for key, label in (("sightingAge", "sighting"), ("decisionAge", "nearest decision")):
            if f.get(key) is not None:
                parts.append(f"{label} {_num(f.get(key), 's')} old")
        if f.get("awayFor") is not None:
            parts.append(f"device away {_num(f.get('awayFor'), 's')}")
        parts.append(f"policy {f.get('policy')}")
        return "; ".join(parts)


def _num(value: Fact, unit: str = "") -> str:
    return "?" if not isinstance(value, int | float) else f"{value:.0f}{unit}"


def _side(facts: Mapping[str, Fact], key: str, present: bool, unit: str = "") -> str:
    if not present:
        return "-"
    value = facts.get(key)
    if unit == "%":
        return "?" if not isinstance(value, int | float) else f"{value:.0%}"
    return _num(value, unit)


@dataclass(frozen=True, slots=True)
class Held:
    """A wanted move that a rule held back this time."""

    workload: str  # Workload.key
    pod: str | None  # uid; None for a parked workload
    reason: Reason | None  # None when the reason is not known yet (unknown node, ...)
    limit: Limit
    target: str | None = None
    until: float | None = None  # when time alone may lift the hold; None: a change must

    def __str__(self) -> str:
        to = f" -> {self.target}" if self.target else ""
        why = self.reason.value if self.reason else "move"
        return f"{why} of {self.workload}{to} held by {self.limit.value}"


@dataclass(frozen=True, slots=True)
class Plan:
    moves: tuple[Move, ...]
    held: tuple[Held, ...]
    memory: Memory

    @property
    def wake_at(self) -> float | None:
        """The earliest time a held move may go ahead with nothing else changing:
        re-plan those pods then (dwell, settle, cooldown and rate windows end)."""
        times = [h.until for h in self.held if h.until is not None]
        return min(times) if times else None
