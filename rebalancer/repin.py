"""Stale pins as planned moves (pure).

The admission webhook pins a new pod to its best nodes once, at creation. A pod still
pending after `rebalance.dwell` whose pinned nodes are none of them feasible any more
while others are (its device moved, they filled up) is planned for a recreate: the
evictor evicts it and its controller creates a replacement, which is pinned afresh.
Only pods with a controller: a bare pod would be lost.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field

from cloud4iot.policy.schema import PlacementPolicy
from extender.admission.narrow import stale_pin
from extender.scoring import TableCache
from extender.state.snapshot import Snapshot
from rebalancer.model import Action, ManagedPod, Move, Reason, Workload
from rebalancer.workloads import PodRecord


@dataclass(frozen=True, slots=True)
class Repins:
    moves: tuple[Move, ...] = ()
    # pod key -> when its dwell ends: plan it again then
    due: dict[str, float] = field(default_factory=dict)


def plan_repins(
    pods: Iterable[PodRecord],
    workload_of: Callable[[PodRecord], Workload],
    snapshot: Snapshot,
    policy: PlacementPolicy,
    now: float,
    skip: Container[str] = (),
    tables: TableCache | None = None,
) -> Repins:
    """Recreates of the pending pods whose pin went stale; `skip`: uids already done."""
    grace = policy.spec.rebalance.dwell
    moves: list[Move] = []
    due: dict[str, float] = {}
    for pod in pods:
        if pod.node is not None or pod.deleting or pod.owner is None or not pod.managed:
            continue
        if pod.uid in skip:
            continue
        if pod.created is not None and now < pod.created + grace:
            due[pod.key] = pod.created + grace
            continue
        why = stale_pin(pod.facts, pod.pins, snapshot, policy, now, tables)
        if why is None:
            continue
        workload = workload_of(pod)
        pending = ManagedPod(
            uid=pod.uid,
            name=pod.name,
            namespace=pod.namespace,
            node="",
            facts=pod.facts,
            workload=workload,
            ready=False,
        )
        moves.append(
            Move(Action.RECREATE, Reason.REPINNED, workload, pending, None, None, {"why": why})
        )
    return Repins(tuple(moves), due)
