"""`cloud4iot explain`'s rebalancer outlook against the rebalancer's own planner: on the
same world, the rule the outlook names (and when it lifts) is the one `plan` holds the
move with, or the move itself (a planner with no memory holds it for the dwell)."""

from __future__ import annotations

from typing import Any

import pytest

from cloud4iot.devices import rfc3339
from extender.podexplain.outlook import Where, outlook
from extender.scoring import evaluate
from extender.state.snapshot import Snapshot
from rebalancer.plan import Kind, Limit, ManagedPod, Memory, MoveRecord, Reason, plan
from tests.rebalancer.test_rebalance_plan import P, T, at_home, owner, pod, roamed, world

BALANCER_LOAD = {"edge-1": 0.8, "edge-2": 0.1}  # balancer scores 10 x (1 - load): 2 vs 9


def balancer(replicas: int = 1) -> ManagedPod:
    return pod(
        "b", "edge-1", function="balancer", device=None, workload=owner("b", replicas=replicas)
    )


def moved(p: ManagedPod, at: float, from_node: str, to_node: str) -> MoveRecord:
    return MoveRecord(p.workload.key, p.facts.device, from_node, to_node, Reason.ROAMING, at)


CASES: dict[str, tuple[ManagedPod, Snapshot, tuple[MoveRecord, ...]]] = {
    "roaming, settled: dwell": (pod("fn", "gw-home"), roamed(T, since=T - 30), ()),
    "roaming, just decided: settle": (pod("fn", "gw-home"), roamed(T, since=T - 2), ()),
    "roaming back to the gateway it left: no-return": (
        pod("fn", "gw-home"),
        roamed(T, since=T - 30),
        (moved(pod("fn", "gw-home"), T - 30, "gw-hospital", "gw-home"),),
    ),
    "a bare pod: no-controller": (
        pod("fn", "gw-home", workload=owner("fn", Kind.POD, can_surge=False)),
        roamed(T, since=T - 30),
        (),
    ),
    "offloading an overloaded gateway: dwell of a load refresh": (
        pod("fn", "gw-home"),
        world(T, [at_home(T)], {"gw-home": 0.95}),
        (),
    ),
    "optional, replicated": (balancer(2), world(T, load=BALANCER_LOAD), ()),
    "optional, moved lately: cooldown-workload": (
        balancer(),
        world(T, load=BALANCER_LOAD),
        (moved(balancer(), T - 30, "edge-2", "edge-1"),),
    ),
    "optional: dwell": (balancer(), world(T, load=BALANCER_LOAD), ()),
    "optional, a gain of exactly minImprovement: dwell": (
        balancer(),
        world(T, load={"edge-1": 0.3, "edge-2": 0.1}),
        (),
    ),
    "optional, too small a gain: stays": (
        balancer(),
        world(T, load={"edge-1": 0.3, "edge-2": 0.2}),
        (),
    ),
}


def owner_doc(p: ManagedPod) -> dict[str, Any] | None:
    if p.workload.kind is Kind.POD:
        return None
    return {"kind": p.workload.kind.value, "spec": {"replicas": p.workload.replicas}}


@pytest.mark.parametrize("case", CASES)
def test_the_outlook_names_the_planners_rule_and_time(case: str) -> None:
    p, snapshot, records = CASES[case]
    planned = plan([p], snapshot, P, Memory(moves=records), T)
    verdicts = evaluate(p.facts, snapshot, P.policy, T).verdicts()
    notes = [{"time": rfc3339(m.at), "from": m.from_node, "to": m.to_node} for m in records]
    w = Where(
        tiers={n: f.tier for n, f in snapshot.nodes.items()},
        device=snapshot.devices.get(p.facts.device or ""),
    )
    seen = outlook(p.node, verdicts, P.policy.spec, owner_doc(p), notes, T, w)
    assert not planned.moves  # a planner without memory has not wanted it long enough
    if not planned.held:
        assert (seen["action"], seen["rule"]) == ("stays", None), seen
        return
    (held,) = planned.held
    assert seen["rule"] == held.limit.value, seen
    assert seen["action"] == ("moves" if held.limit is Limit.DWELL else "held")
    assert seen["until"] == (rfc3339(held.until) if held.until is not None else None), seen
    if held.reason is not None:
        assert seen["reason"] == held.reason.value
    if held.target is not None:
        assert seen["target"] == held.target
