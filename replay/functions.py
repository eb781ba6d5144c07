"""A function bound to each replayed device, placed and moved by the product's own code.

Each device gets one single-replica Deployment of a function class (a pod annotated
with the device and the class). A pending pod is placed where the scorer
(``extender.scoring.evaluate``) ranks a feasible node first, as kube-scheduler does
through the extender; a running one is handed to the rebalancer's pure planner
(``rebalancer.plan.plan``: dwell, settle, cooldown, rate limits, park/unpark), whose
moves land on the node it expects. Both read one Snapshot built from the replayed
state: the Devices as the chain's reflector holds them, the recording's gateways as
gateway nodes (plus any edge/cloud nodes asked for), and the load series when one is
given (else every node at ``IDLE_CPU``, measured at each plan).

The planner is asked at every step of the nearest writer (at least once a second): the
live actor plans on every Device change and at the plan's wake-up, so a move may land
up to that step later than live; the rules that decide it are the same.

Reported per device: function moves (rollouts, evictions, parks, unparks) and the time
the function had no node (pending before its first placement, or parked).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cloud4iot.policy.loader import LoadedPolicy
from cloud4iot.policy.schema import ProximityMode
from cloud4iot.vocabulary import TIER_LABEL
from extender.scoring import PodFacts, TableCache, evaluate
from extender.state.snapshot import DeviceFacts, LoadSample, NodeFacts, Snapshot
from rebalancer.plan import Action, Kind, ManagedPod, Memory, Workload, plan

IDLE_CPU = 0.3  # every node's CPU when no load series is given
NAMESPACE = "replay"

# node -> time-ordered (t, cpu, memory) samples, t on the recording's clock
LoadSeries = Mapping[str, Sequence[tuple[float, float | None, float | None]]]


def default_class(policy: LoadedPolicy) -> str | None:
    """The first class that runs on gateways near its device (proximity required),
    else the first that prefers it; None when the policy has neither."""
    classes = policy.policy.spec.classes
    for mode in (ProximityMode.REQUIRED, ProximityMode.PREFERRED):
        for name, cls in classes.items():
            if cls.proximity is mode and "gateway" in cls.tiers:
                return name
    return None


@dataclass(slots=True)
class FunctionStats:
    moves: int = 0
    unplaced_s: float = 0.0
    seconds: float = 0.0  # time the function existed (the replay's span)
    placements: list[tuple[float, str | None]] = field(default_factory=list)  # (t, node)

    def add(self, other: FunctionStats) -> None:
        self.moves += other.moves
        self.unplaced_s += other.unplaced_s
        self.seconds += other.seconds

    def summary(self) -> dict[str, float | int | None]:
        hours = self.seconds / 3600.0
        return {
            "function_moves": self.moves,
            "function_moves_per_h": round(self.moves / hours, 2) if hours else None,
            "unplaced_s": round(self.unplaced_s, 1),
            "unplaced_pct": round(100.0 * self.unplaced_s / self.seconds, 2)
            if self.seconds
            else None,
        }


@dataclass(slots=True)
class _Function:
    workload: Workload
    facts: PodFacts
    node: str | None = None
    parked: bool = False
    generation: int = 0  # a new pod uid after each move

    @property
    def uid(self) -> str:
        return f"{self.workload.name}-{self.generation}"


class Functions:
    """The functions of one replay; ``step`` is called with the reflector's Devices."""

    def __init__(
        self,
        policy: LoadedPolicy,
        devices: Sequence[str],
        gateways: Sequence[str],
        function_class: str,
        offset: float,
        start: float,
        extra_nodes: Mapping[str, str] | None = None,
        load: LoadSeries | None = None,
    ) -> None:
        if function_class not in policy.policy.spec.classes:
            raise ValueError(f"the policy has no function class {function_class!r}")
        self.policy = policy
        self.offset = offset
        self.start = start
        self.load = load
        tiers = {gw: "gateway" for gw in gateways} | dict(extra_nodes or {})
        self.nodes = {n: NodeFacts(n, t, "arm64", {TIER_LABEL: t}) for n, t in tiers.items()}
        self.functions: dict[str, _Function] = {}
        self.stats: dict[str, FunctionStats] = {}
        for device in devices:
            name = f"fn-{device}"
            workload = Workload(Kind.DEPLOYMENT, NAMESPACE, name, can_surge=True)
            facts = PodFacts(name, NAMESPACE, function=function_class, device=device)
            self.functions[device] = _Function(workload, facts)
            self.stats[device] = FunctionStats(placements=[(start, None)])
        self.memory = Memory()
        self.tables = TableCache()
        self.last = start + offset  # unplaced from the start until a first placement

    def _load(self, now: float) -> dict[str, LoadSample]:
        t = now - self.offset
        if self.load is None:
            return {n: LoadSample(cpu=IDLE_CPU, memory=None, at=now) for n in self.nodes}
        out = {}
        for node, samples in self.load.items():
            i = bisect.bisect_right(samples, (t, float("inf"), float("inf"))) - 1
            if i >= 0:
                at, cpu, mem = samples[i]
                out[node] = LoadSample(cpu=cpu, memory=mem, at=at + self.offset)
        return out

    def step(self, now: float, devices: Mapping[str, DeviceFacts]) -> None:
        for device, fn in self.functions.items():
            if fn.node is None:
                self.stats[device].unplaced_s += now - self.last
        self.last = now
        load = self._load(now)
        snapshot = Snapshot(
            nodes=self.nodes,
            devices=devices,
            load=load,
            nodes_synced=True,
            devices_synced=True,
            load_refreshed_at=now,
        )
        spec = self.policy.policy
        pods, parked = [], []
        for device, fn in self.functions.items():
            if fn.parked:
                parked.append((fn.workload, fn.facts))
            elif fn.node is None:  # kube-scheduler through the extender
                verdicts = evaluate(fn.facts, snapshot, spec, now, tables=self.tables).verdicts()
                best = sorted((v for v in verdicts if v.feasible), key=lambda v: (-v.score, v.node))
                if best:
                    self._place(device, fn, best[0].node, now, move=False)
            else:
                pods.append(ManagedPod(fn.uid, fn.uid, NAMESPACE, fn.node, fn.facts, fn.workload))
        result = plan(pods, snapshot, self.policy, self.memory, now, parked, self.tables)
        self.memory = result.memory
        by_workload = {fn.workload.key: d for d, fn in self.functions.items()}
        for move in result.moves:
            device = by_workload[move.workload.key]
            fn = self.functions[device]
            if move.action is Action.PARK:
                fn.parked = True
                self._place(device, fn, None, now, move=True)
            elif move.action is Action.UNPARK:
                fn.parked = False
                self._place(device, fn, move.to_node, now, move=True)
            elif move.to_node is not None:
                self._place(device, fn, move.to_node, now, move=True)

    def _place(self, device: str, fn: _Function, node: str | None, now: float, move: bool) -> None:
        fn.node = node
        fn.generation += 1
        stats = self.stats[device]
        stats.moves += int(move)
        stats.placements.append((now - self.offset, node))

    def finish(self, end: float) -> dict[str, FunctionStats]:
        """Close the books at ``end`` (chain clock); the stats per device."""
        for device, fn in self.functions.items():
            if fn.node is None:
                self.stats[device].unplaced_s += max(0.0, end - self.last)
        for stats in self.stats.values():
            stats.seconds = end - (self.start + self.offset)
        return self.stats
