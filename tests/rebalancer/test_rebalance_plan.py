"""The rebalancer's pure planner: one test per rule and per reason.

Snapshots are built directly, time is a fixed number, and policies are parsed from
YAML text, so each test states the whole world it depends on.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from string import Template
from typing import Any

import pytest

from cloud4iot.policy.loader import LoadedPolicy, parse_policy
from cloud4iot.vocabulary import TIER_LABEL
from extender.scoring import PodFacts, evaluate
from extender.state.snapshot import DeviceFacts, LoadSample, NodeFacts, Sighting, Snapshot
from rebalancer.plan import (
    Action,
    Kind,
    Limit,
    ManagedPod,
    Memory,
    MoveRecord,
    Pending,
    Plan,
    Reason,
    Workload,
    plan,
)

T = 1_700_000_000.0  # a fixed "now"

POLICY = Template("""\
apiVersion: cloud4iot.io/v1alpha1
kind: PlacementPolicy
metadata:
  name: test
spec:
  staleData: {loadMaxAge: 30s, sightingMaxAge: 30s, onStaleLoad: failOpen}
  nearest: {challengerMarginDb: 6, challengerDwell: 10s, freshness: 15s, settle: 5s}
  rebalance:
    interval: 60s
    minImprovement: $min_improvement
    dwell: 10s
    cooldown: 2m
    deviceAwayAfter: 2m
    maxMovesPerMinute: $global_rate
    maxMovesPerNodePerMinute: $node_rate
  classes:
    mhealth:                     # confidential: gateway and edge only
      tiers: [gateway, edge]
      preference: {default: [gateway, edge]}
      proximity: required
      loadLimits: {cpu: 0.85}
      weights: {tier: 1, proximity: 2, load: 1}
      whenDeviceAway: $away
    engine:
      tiers: [gateway, edge, cloud]
      defaultMode: normal
      preference: {intensive: [gateway, edge, cloud], normal: [cloud, edge, gateway]}
      proximity: preferred
      rssiThreshold: -90
      loadLimits: {cpu: 0.9}
      weights: {tier: 2, proximity: 1, load: 1}
    balancer:                    # score = 10 x (1 - load): easy to pin exactly
      tiers: [edge]
      weights: {tier: 0, proximity: 0, load: 1}
""")


def policy(
    away: str = "fallback", min_improvement: int = 2, global_rate: int = 10, node_rate: int = 3
) -> LoadedPolicy:
    return parse_policy(
        POLICY.substitute(
            away=away,
            min_improvement=min_improvement,
            global_rate=global_rate,
            node_rate=node_rate,
        ),
        "test.yaml",
    )


P = policy()
NODES = {
    "gw-home": "gateway",
    "gw-hospital": "gateway",
    "edge-1": "edge",
    "edge-2": "edge",
    "cloud-1": "cloud",
}


def world(
    at: float,
    devices: Iterable[DeviceFacts] = (),
    load: Mapping[str, float] | None = None,
    nodes: Mapping[str, str] = NODES,
    synced: bool = True,
) -> Snapshot:
    """Every node at 30 % CPU, measured at `at`, unless `load` says otherwise."""
    loads = {n: 0.3 for n in nodes} | dict(load or {})
    return Snapshot(
        nodes={n: NodeFacts(n, tier, "arm64", {TIER_LABEL: tier}) for n, tier in nodes.items()},
        devices={d.name: d for d in devices},
        load={n: LoadSample(cpu=v, memory=None, at=at) for n, v in loads.items()},
        nodes_synced=synced,
        devices_synced=synced,
        load_refreshed_at=at,
    )


def wearable(
    name: str,
    at: float,
    heard: Mapping[str, float],
    nearest: str | None = None,
    since: float | None = None,
) -> DeviceFacts:
    return DeviceFacts(
        name=name,
        address=None,
        sightings={n: Sighting(n, rssi, at) for n, rssi in heard.items()},
        nearest=nearest,
        nearest_since=since,
    )


def owner(
    name: str = "fn",
    kind: Kind = Kind.DEPLOYMENT,
    can_surge: bool = True,
    settled: bool = True,
    replicas: int = 1,
) -> Workload:
    return Workload(kind, "health", name, can_surge, replicas, settled)


def pod(
    name: str,
    node: str,
    function: str = "mhealth",
    device: str | None = "patient",
    mode: str | None = None,
    workload: Workload | None = None,
    **kw: Any,
) -> ManagedPod:
    facts = PodFacts(name=name, namespace="health", function=function, device=device, mode=mode)
    return ManagedPod(
        uid=f"uid-{name}",
        name=name,
        namespace="health",
        node=node,
        facts=facts,
        workload=workload or owner(name),
        **kw,
    )


def limits(p: Plan) -> list[tuple[str, Limit]]:
    return [(h.workload, h.limit) for h in p.held]


# --- Roaming --------------------------------------------------------------------------


def roamed(at: float, since: float) -> Snapshot:
    """The patient walked to the hospital: the nearest decision says so since `since`."""
    dev = wearable("patient", at, {"gw-home": -80, "gw-hospital": -55}, "gw-hospital", since)
    return world(at, [dev])


def test_roaming_waits_for_settle_then_dwell_then_makes_exactly_one_rollout():
    fn = pod("fn", "gw-home")
    memory = Memory()
    seen: list[Plan] = []
    for t in (1.0, 4.9, 6.0, 10.9, 11.0, 12.0):
        p = plan([fn], roamed(T + t, since=T), P, memory, T + t)
        memory = p.memory
        seen.append(p)
    assert [h.limit for h in seen[0].held] == [Limit.SETTLE]
    assert seen[0].held[0].until == T + 5.0
    assert [h.limit for h in seen[1].held] == [Limit.SETTLE]
    # The move has been wanted since t=1 (same target and reason): dwell ends at 11.
    assert [(h.limit, h.until) for h in seen[2].held] == [(Limit.DWELL, T + 11.0)]
    assert [h.limit for h in seen[3].held] == [Limit.DWELL]
    assert all(not s.moves for s in seen[:4])
    (move,) = seen[4].moves
    assert (move.action, move.reason) == (Action.ROLLOUT, Reason.ROAMING)
    assert (move.from_node, move.to_node) == ("gw-home", "gw-hospital")
    assert move.pod == fn
    # The actor starts the rollout; until it has moved the pod, nothing more happens.
    busy = pod("fn", "gw-home", workload=owner("fn", settled=False))
    again = plan([busy], roamed(T + 12, since=T), P, seen[4].memory, T + 12)
    assert not again.moves
    assert limits(again) == [("Deployment/health/fn", Limit.ROLLOUT_IN_PROGRESS)]
    # Once on the new gateway: nothing to do, ever.
    there = pod("fn", "gw-hospital")
    for t in range(13, 400, 7):
        after = plan([there], roamed(T + t, since=T), P, again.memory, T + t)
        assert not after.moves
        assert not after.held


def test_roaming_a_statefulset_evicts():
    fn = pod("fn", "gw-home", workload=owner("fn", Kind.STATEFUL_SET, can_surge=False))
    memory = Memory(pending={fn.uid: Pending("gw-hospital", Reason.ROAMING, T - 20)})
    (move,) = plan([fn], roamed(T, since=T - 30), P, memory, T).moves
    assert (move.action, move.reason, move.to_node) == (Action.EVICT, Reason.ROAMING, "gw-hospital")


def test_a_deployment_that_cannot_surge_is_evicted():
    fn = pod("fn", "gw-home", workload=owner("fn", can_surge=False))
    memory = Memory(pending={fn.uid: Pending("gw-hospital", Reason.ROAMING, T - 20)})
    (move,) = plan([fn], roamed(T, since=T - 30), P, memory, T).moves
    assert move.action is Action.EVICT


def test_a_bare_pod_is_never_moved():
    fn = pod("fn", "gw-home", workload=owner("fn", Kind.POD, can_surge=False))
    memory = Memory()
    for t in range(0, 600, 10):
        p = plan([fn], roamed(T + t, since=T - 30), P, memory, T + t)
        memory = p.memory
        assert not p.moves
        assert limits(p) == [("Pod/health/fn", Limit.NO_CONTROLLER)]


def test_noisy_stationary_device_never_moves_anything():
    rng = random.Random(3)
    pods = [
        pod("consolidator", "gw-home"),
        pod("diagnostic", "gw-home", function="engine", mode="intensive"),
    ]
    memory = Memory()
    for t in range(0, 3600, 5):
        heard = {"gw-home": -62 + rng.gauss(0, 4), "gw-hospital": -66 + rng.gauss(0, 4)}
        dev = wearable("patient", T + t, heard, nearest="gw-home", since=T - 600)
        load = {n: min(0.8, max(0.0, 0.3 + rng.gauss(0, 0.1))) for n in NODES}
        p = plan(pods, world(T + t, [dev], load), P, memory, T + t)
        memory = p.memory
        assert not p.moves, p.moves
        assert not p.held, p.held


# --- Offloading, Onloading ---------------------------------------------------------------


def at_home(at: float, since: float = T - 600) -> DeviceFacts:
    return wearable("patient", at, {"gw-home": -60}, "gw-home", since)


def test_offloading_the_confidential_class_goes_to_the_edge_never_the_cloud():
    fn = pod("fn", "gw-home")
    # The cloud is idle and the edges busy: only the class's tiers keep it off the cloud.
    load = {"gw-home": 0.95, "edge-1": 0.6, "edge-2": 0.7, "cloud-1": 0.0}
    memory = Memory(pending={fn.uid: Pending("edge-1", Reason.OFFLOADING, T - 10)})
    (move,) = plan([fn], world(T, [at_home(T)], load), P, memory, T).moves
    assert (move.reason, move.to_node) == (Reason.OFFLOADING, "edge-1")
    assert "above the limit" in str(move.facts["why"])
    assert move.facts["loadFrom"] == pytest.approx(0.95)


def test_offloading_an_optional_move_up_a_tier():
    # Normal monitoring prefers the cloud: a diagnostic left on the gateway goes up.
    fn = pod("fn", "gw-home", function="engine", mode="normal")
    memory = Memory(pending={fn.uid: Pending("cloud-1", Reason.OFFLOADING, T - 10)})
    (move,) = plan([fn], world(T, [at_home(T)]), P, memory, T).moves
    assert (move.reason, move.to_node) == (Reason.OFFLOADING, "cloud-1")


def test_a_forced_move_bypasses_the_cooldown():
    fn = pod("fn", "edge-1")
    # Moved 30 s ago from gw-hospital; now its edge is overloaded and no gateway hears it.
    dev = wearable("patient", T - 100, {"gw-home": -60})
    earlier = MoveRecord(
        "Deployment/health/fn", "patient", "gw-hospital", "edge-1", Reason.DEVICE_AWAY, T - 30
    )
    memory = Memory(
        pending={fn.uid: Pending("edge-2", Reason.OFFLOADING, T - 10)}, moves=(earlier,)
    )
    (move,) = plan([fn], world(T, [dev], {"edge-1": 0.95}), P, memory, T).moves
    assert (move.reason, move.to_node) == (Reason.OFFLOADING, "edge-2")


def offloaded(at: float) -> MoveRecord:
    return MoveRecord("Deployment/health/fn", "patient", "gw-home", "edge-1", Reason.OFFLOADING, at)


def test_onloading_back_only_after_the_cooldown():
    fn = pod("fn", "edge-1", function="engine", mode="intensive", started=T - 25)
    memory = Memory(moves=(offloaded(T - 30),))
    p = plan([fn], world(T, [at_home(T)]), P, memory, T)
    assert not p.moves
    (held,) = p.held
    assert (held.limit, held.reason, held.target) == (
        Limit.COOLDOWN_WORKLOAD,
        Reason.ONLOADING,
        "gw-home",
    )
    assert held.until == T - 30 + 120
    p = plan([fn], world(T + 89, [at_home(T + 89)]), P, p.memory, T + 89)
    assert [h.limit for h in p.held] == [Limit.COOLDOWN_WORKLOAD]
    p = plan([fn], world(T + 90, [at_home(T + 90)]), P, p.memory, T + 90)
    (move,) = p.moves  # the dwell ran during the cooldown
    assert (move.reason, move.from_node, move.to_node) == (Reason.ONLOADING, "edge-1", "gw-home")


def test_forced_move_never_returns_to_the_node_just_left_within_the_cooldown():
    # Offloaded from gw-home 30 s ago; now edge-1 is overloaded and gw-home has room:
    # the scorer's best (the only feasible node, for this class) is the node just left.
    fn = pod("fn", "edge-1", started=T - 25)
    memory = Memory(moves=(offloaded(T - 30),))
    p = plan([fn], world(T, [at_home(T)], {"edge-1": 0.95}), P, memory, T)
    assert not p.moves
    assert [(h.limit, h.target, h.until) for h in p.held] == [(Limit.NO_RETURN, "gw-home", T + 90)]
    later = T + 90
    p = plan([fn], world(later, [at_home(later)], {"edge-1": 0.95}), P, p.memory, later)
    (move,) = p.moves  # wanted since T: the dwell ran during the hold
    # Forced off an overloaded node: Offloading, whichever tier it goes to.
    assert (move.reason, move.to_node) == (Reason.OFFLOADING, "gw-home")


def test_forced_move_goes_to_a_better_node_than_the_one_just_left():
    fn = pod("fn", "edge-1", function="engine", mode="intensive")
    left_edge_2 = MoveRecord(
        "Deployment/health/fn", "patient", "edge-2", "edge-1", Reason.OFFLOADING, T - 30
    )
    memory = Memory(
        pending={fn.uid: Pending("gw-home", Reason.OFFLOADING, T - 20)}, moves=(left_edge_2,)
    )
    (move,) = plan([fn], world(T, [at_home(T)], {"edge-1": 0.95}), P, memory, T).moves
    assert move.to_node == "gw-home"
    assert move.to_node != left_edge_2.from_node


# --- DeviceAway, DeviceBack, keep, park -----------------------------------------------------


def gone(last_seen: float) -> DeviceFacts:
    """No gateway has heard the patient since `last_seen`."""
    return wearable("patient", last_seen, {"gw-home": -60})


def test_fallback_moves_a_function_whose_device_is_away_to_the_edge():
    fn = pod("fn", "gw-home")
    memory = Memory()
    moves = []
    for t in (0.0, 10.0):
        p = plan(
            [fn], world(T + t, [gone(T - 40)], {"edge-1": 0.8, "edge-2": 0.0}), P, memory, T + t
        )
        memory = p.memory
        moves += p.moves
    (move,) = moves
    assert (move.reason, move.to_node) == (Reason.DEVICE_AWAY, "edge-2")
    assert move.facts["sightingAge"] == pytest.approx(50.0)


def test_keep_holds_a_function_whose_device_is_away():
    keep = policy(away="keep")
    fn = pod("fn", "gw-home")
    memory = Memory()
    for t in range(0, 900, 15):
        p = plan([fn], world(T + t, [gone(T - 40)]), keep, memory, T + t)
        memory = p.memory
        assert not p.moves
        assert [(h.limit, h.reason) for h in p.held] == [
            (Limit.DEVICE_AWAY_KEEP, Reason.DEVICE_AWAY)
        ]


def test_keep_still_roams_when_another_gateway_hears_the_device():
    keep = policy(away="keep")
    fn = pod("fn", "gw-home")
    memory = Memory(pending={fn.uid: Pending("gw-hospital", Reason.ROAMING, T - 10)})
    (move,) = plan([fn], roamed(T, since=T - 30), keep, memory, T).moves
    assert move.reason is Reason.ROAMING


PARK = policy(away="park")


def test_park_waits_for_device_away_after_then_scales_the_deployment_to_zero():
    fn = pod("fn", "gw-home")
    last_seen = T - 100  # away after 2 m: at T + 20
    p = plan([fn], world(T, [gone(last_seen)]), PARK, Memory(), T)
    assert not p.moves
    assert [(h.limit, h.until) for h in p.held] == [(Limit.DEVICE_AWAY_WAIT, T + 20)]
    p = plan([fn], world(T + 19.9, [gone(last_seen)]), PARK, p.memory, T + 19.9)
    assert not p.moves
    p = plan([fn], world(T + 20, [gone(last_seen)]), PARK, p.memory, T + 20)
    (move,) = p.moves
    assert (move.action, move.reason) == (Action.PARK, Reason.DEVICE_AWAY)
    assert (move.from_node, move.to_node) == ("gw-home", None)
    assert move.facts["awayFor"] == pytest.approx(120.0)


def test_a_device_never_heard_is_parked_after_device_away_after_from_first_sight():
    fn = pod("fn", "edge-1")
    silent = DeviceFacts(name="patient", address=None, sightings={})
    p = plan([fn], world(T, [silent]), PARK, Memory(), T)
    assert not p.moves
    assert p.memory.unheard_since == {"patient": T}
    p = plan([fn], world(T + 119, [silent]), PARK, p.memory, T + 119)
    assert not p.moves
    p = plan([fn], world(T + 120, [silent]), PARK, p.memory, T + 120)
    assert [m.action for m in p.moves] == [Action.PARK]


def test_the_never_heard_timer_restarts_once_the_device_has_been_heard():
    fn = pod("fn", "edge-1")
    silent = DeviceFacts(name="patient", address=None, sightings={})
    p = plan([fn], world(T, [silent]), PARK, Memory(), T)
    p = plan([fn], world(T + 60, [at_home(T + 60)]), PARK, p.memory, T + 60)
    assert p.memory.unheard_since == {}
    # Its Device was recreated without sightings: a fresh wait, not the old timer.
    p = plan([fn], world(T + 500, [silent]), PARK, p.memory, T + 500)
    assert not p.moves
    assert p.memory.unheard_since == {"patient": T + 500}


@pytest.mark.parametrize(
    ("kind", "limit"),
    [(Kind.STATEFUL_SET, Limit.PARK_NEEDS_DEPLOYMENT), (Kind.POD, Limit.NO_CONTROLLER)],
)
def test_only_deployments_are_parked(kind, limit):
    fn = pod("fn", "gw-home", workload=owner("fn", kind, can_surge=False))
    p = plan([fn], world(T, [gone(T - 500)]), PARK, Memory(), T)
    assert not p.moves
    assert [h.limit for h in p.held] == [limit]


def parked_fn() -> tuple[Workload, PodFacts]:
    workload = Workload(Kind.DEPLOYMENT, "health", "fn", True, 0, True, parked_replicas=2)
    return workload, PodFacts(name="fn", namespace="health", function="mhealth", device="patient")


def test_a_parked_deployment_stays_parked_while_its_device_is_away():
    p = plan([], world(T, [gone(T - 500)]), PARK, Memory(), T, parked=[parked_fn()])
    assert not p.moves
    assert not p.held


def test_a_parked_deployment_is_restored_as_soon_as_a_gateway_hears_its_device():
    dev = wearable("patient", T, {"gw-hospital": -60}, "gw-hospital", since=T)  # just now
    # Three moves touched gw-hospital in the last minute: unpark ignores the node rate.
    busy = tuple(
        MoveRecord(f"Deployment/health/x{i}", None, "gw-home", "gw-hospital", Reason.ROAMING, T - 5)
        for i in range(3)
    )
    p = plan([], world(T, [dev]), PARK, Memory(moves=busy), T, parked=[parked_fn()])
    (move,) = p.moves
    assert (move.action, move.reason, move.pod) == (Action.UNPARK, Reason.DEVICE_BACK, None)
    assert move.to_node == "gw-hospital"
    assert move.workload.parked_replicas == 2
    assert p.memory.moves[-1].device == "patient"


def test_unpark_still_obeys_the_global_rate():
    dev = wearable("patient", T, {"gw-hospital": -60}, "gw-hospital", since=T)
    full = tuple(
        MoveRecord(f"Deployment/health/x{i}", None, "edge-1", "edge-2", Reason.OFFLOADING, T - 50)
        for i in range(10)
    )
    p = plan([], world(T, [dev]), PARK, Memory(moves=full), T, parked=[parked_fn()])
    assert not p.moves
    assert [(h.limit, h.until) for h in p.held] == [(Limit.GLOBAL_RATE, T + 10)]


def test_a_parked_deployment_whose_class_no_longer_parks_is_restored():
    p = plan([], world(T, [gone(T - 500)]), P, Memory(), T, parked=[parked_fn()])
    assert [m.action for m in p.moves] == [Action.UNPARK]
    assert p.moves[0].to_node in ("edge-1", "edge-2")


@pytest.mark.parametrize(
    ("started", "reason"),
    [(T - 200, Reason.DEVICE_BACK), (T - 10, Reason.ONLOADING), (None, Reason.DEVICE_BACK)],
    ids=["decided-after-the-pod-started", "decided-before", "start-unknown"],
)
def test_back_to_the_devices_gateway_is_device_back_unless_the_device_never_left(started, reason):
    # An optional move down to the nearest gateway: DeviceBack when the decision for
    # that gateway is newer than the pod on the edge, else the gateway has room again.
    fn = pod("fn", "edge-1", function="engine", mode="intensive", started=started)
    dev = wearable("patient", T, {"gw-home": -60}, "gw-home", since=T - 20)
    memory = Memory(pending={fn.uid: Pending("gw-home", reason, T - 20)})
    (move,) = plan([fn], world(T, [dev]), P, memory, T).moves
    assert (move.reason, move.to_node) == (reason, "gw-home")


def test_device_back_from_the_edge_after_settle():
    # Fell back to the edge 200 s ago; the patient is heard again since a decision 3 s ago.
    fn = pod("fn", "edge-1", started=T - 200)
    dev = wearable("patient", T, {"gw-home": -60}, "gw-home", since=T - 3)
    memory = Memory(pending={fn.uid: Pending("gw-home", Reason.DEVICE_BACK, T - 20)})
    p = plan([fn], world(T, [dev]), P, memory, T)
    assert [(h.limit, h.until) for h in p.held] == [(Limit.SETTLE, T + 2)]
    (move,) = plan([fn], world(T + 2, [dev]), P, p.memory, T + 2).moves
    assert (move.reason, move.from_node, move.to_node) == (Reason.DEVICE_BACK, "edge-1", "gw-home")
    assert move.facts["decisionAge"] == pytest.approx(5.0)


# --- No move without a feasible better node; minImprovement; dwell ---------------------------


def test_no_move_when_no_node_is_feasible():
    fn = pod("fn", "gw-home")
    load = {"gw-home": 0.95, "edge-1": 0.95, "edge-2": 0.95, "cloud-1": 0.0}
    p = plan([fn], world(T, [at_home(T)], load), P, Memory(), T)
    assert not p.moves
    assert [h.limit for h in p.held] == [Limit.NO_FEASIBLE_NODE]


def test_no_move_when_no_other_node_is_better():
    fn = pod("fn", "edge-1", function="balancer", device=None)
    memory = Memory(pending={fn.uid: Pending("edge-2", Reason.OFFLOADING, T - 60)})
    p = plan([fn], world(T, load={"edge-1": 0.3, "edge-2": 0.3}), P, memory, T)
    assert not p.moves
    assert not p.held
    assert fn.uid not in p.memory.pending  # no longer wanted: the dwell starts afresh


def balanced(edge_2_load: float) -> Snapshot:
    return world(T, load={"edge-1": 0.5, "edge-2": edge_2_load})


@pytest.mark.parametrize(
    ("edge_2_load", "scores", "moves"),
    [(0.3, (5, 7), 1), (0.4, (5, 6), 0)],
    ids=["exactly-min-improvement", "one-below"],
)
def test_min_improvement_boundary(edge_2_load, scores, moves):
    fn = pod("fn", "edge-1", function="balancer", device=None)
    snap = balanced(edge_2_load)
    verdicts = {v.node: v.score for v in evaluate(fn.facts, snap, P.policy, T).verdicts()}
    assert (verdicts["edge-1"], verdicts["edge-2"]) == scores
    memory = Memory(pending={fn.uid: Pending("edge-2", Reason.OFFLOADING, T - 60)})
    p = plan([fn], snap, P, memory, T)
    assert len(p.moves) == moves
    if moves:
        assert p.moves[0].to_node == "edge-2"


def test_min_improvement_follows_the_policy():
    fn = pod("fn", "edge-1", function="balancer", device=None)
    memory = Memory(pending={fn.uid: Pending("edge-2", Reason.OFFLOADING, T - 60)})
    assert plan([fn], balanced(0.3), P, memory, T).moves
    assert not plan([fn], balanced(0.3), policy(min_improvement=3), memory, T).moves


def test_dwell_boundary_and_continuity():
    fn = pod("fn", "edge-1", function="balancer", device=None)
    better, same = balanced(0.3), balanced(0.5)
    p = plan([fn], better, P, Memory(), T)
    assert [(h.limit, h.until) for h in p.held] == [(Limit.DWELL, T + 10)]
    assert p.memory.pending[fn.uid] == Pending("edge-2", Reason.OFFLOADING, T)
    assert not plan([fn], better, P, p.memory, T + 9.999).moves
    assert len(plan([fn], better, P, p.memory, T + 10).moves) == 1
    # Not wanted for one plan in between: the dwell starts again.
    gap = plan([fn], same, P, p.memory, T + 5)
    again = plan([fn], better, P, gap.memory, T + 10)
    assert not again.moves
    assert again.held[0].until == T + 20


def test_a_change_of_target_restarts_the_dwell():
    fn = pod("fn", "gw-home")
    memory = Memory(pending={fn.uid: Pending("edge-1", Reason.DEVICE_AWAY, T - 60)})
    p = plan([fn], roamed(T, since=T - 30), P, memory, T)
    assert [(h.limit, h.until) for h in p.held] == [(Limit.DWELL, T + 10)]
    assert p.memory.pending[fn.uid].target == "gw-hospital"


# --- Cooldown per device, rates, order, one move per workload ----------------------------------


def test_cooldown_per_device_holds_another_function_of_the_same_device():
    fn = pod("fn", "edge-1", function="engine", mode="intensive")
    sibling_moved = MoveRecord(
        "Deployment/health/other", "patient", "edge-2", "gw-home", Reason.ONLOADING, T - 60
    )
    memory = Memory(
        pending={fn.uid: Pending("gw-home", Reason.DEVICE_BACK, T - 30)}, moves=(sibling_moved,)
    )
    p = plan([fn], world(T, [at_home(T)]), P, memory, T)
    assert not p.moves
    assert [(h.limit, h.until) for h in p.held] == [(Limit.COOLDOWN_DEVICE, T + 60)]
    assert len(plan([fn], world(T + 60, [at_home(T + 60)]), P, p.memory, T + 60).moves) == 1


def overloaded_home(n: int, at: float = T) -> tuple[list[ManagedPod], Snapshot, Memory]:
    """n functions, each for its own device heard only by gw-home, which is overloaded."""
    devices = [wearable(f"d{i}", at, {"gw-home": -60}, "gw-home", T - 600) for i in range(n)]
    pods = [pod(f"fn{i:02d}", "gw-home", device=f"d{i}") for i in range(n)]
    pending = {p.uid: Pending("edge-1", Reason.OFFLOADING, at - 10) for p in pods}
    return pods, world(at, devices, {"gw-home": 0.95}), Memory(pending=pending)


def test_per_node_rate():
    pods, snap, memory = overloaded_home(5)
    p = plan(pods, snap, P, memory, T)
    assert [m.pod.name for m in p.moves if m.pod] == ["fn00", "fn01", "fn02"]
    assert [h.limit for h in p.held] == [Limit.NODE_RATE] * 2
    assert {h.until for h in p.held} == {T + 60}
    # A minute later the node has room for three more.
    rest = [q for q in pods if q.name in ("fn03", "fn04")]
    _, later, _ = overloaded_home(5, at=T + 60)
    assert len(plan(rest, later, P, p.memory, T + 60).moves) == 2


def test_per_node_rate_counts_arrivals_and_earlier_moves():
    pods, snap, memory = overloaded_home(2)
    arrived = tuple(
        MoveRecord(f"Deployment/health/x{i}", None, "cloud-1", "edge-1", Reason.ONLOADING, T - 59)
        for i in range(2)
    )
    p = plan(pods, snap, P, Memory(memory.pending, arrived), T)
    assert len(p.moves) == 1  # edge-1 had 2 arrivals in the minute: one more fits
    assert [(h.limit, h.target, h.until) for h in p.held] == [(Limit.NODE_RATE, "edge-1", T + 1)]


def test_global_rate_counts_moves_planned_earlier_in_the_same_call():
    fast_nodes = policy(node_rate=100)
    pods, snap, memory = overloaded_home(12)
    p = plan(pods, snap, fast_nodes, memory, T)
    assert len(p.moves) == 10
    assert [h.limit for h in p.held] == [Limit.GLOBAL_RATE] * 2
    earlier = tuple(
        MoveRecord(f"Deployment/health/x{i}", None, "cloud-1", "edge-2", Reason.ONLOADING, T - 30)
        for i in range(4)
    )
    p = plan(pods, snap, fast_nodes, Memory(memory.pending, earlier), T)
    assert len(p.moves) == 6
    assert len(p.memory.moves) == 10


def test_forced_moves_are_served_first():
    two = policy(global_rate=2)
    pods, snap, memory = overloaded_home(2)
    # An optional move with a larger improvement than either forced one.
    opt = pod("opt", "gw-hospital", function="engine", mode="normal", device=None)
    pending = dict(memory.pending) | {opt.uid: Pending("cloud-1", Reason.OFFLOADING, T - 10)}
    p = plan([opt, *pods], snap, two, Memory(pending), T)
    assert sorted(m.pod.name for m in p.moves if m.pod) == ["fn00", "fn01"]
    assert [(h.workload, h.limit) for h in p.held] == [("Deployment/health/opt", Limit.GLOBAL_RATE)]


def test_one_move_per_workload_per_plan():
    shared = owner("fn", replicas=3)
    pods = [pod(f"fn-{i}", "gw-home", workload=shared) for i in range(3)]
    memory = Memory(pending={p.uid: Pending("gw-hospital", Reason.ROAMING, T - 20) for p in pods})
    p = plan(pods, roamed(T, since=T - 30), P, memory, T)
    assert len(p.moves) == 1
    # One replica of three: evicted (the others serve), not a rollout of all three.
    assert p.moves[0].action is Action.EVICT
    assert len(p.memory.moves) == 1


def test_plans_are_deterministic_and_memory_is_not_mutated():
    pods, snap, memory = overloaded_home(5)
    before = Memory(dict(memory.pending), memory.moves, dict(memory.unheard_since))
    a = plan(pods, snap, P, memory, T)
    b = plan(list(reversed(pods)), snap, P, memory, T)
    assert a.moves == b.moves
    assert a.held == b.held
    assert memory == before


# --- Skipped pods, unknown node, unsynced caches, memory ----------------------------------------


@pytest.mark.parametrize("state", [{"deleting": True}, {"ready": False}])
def test_deleting_and_unready_pods_are_left_alone(state):
    fn = pod("fn", "gw-home", **state)
    memory = Memory(pending={fn.uid: Pending("gw-hospital", Reason.ROAMING, T - 20)})
    p = plan([fn], roamed(T, since=T - 30), P, memory, T)
    assert not p.moves
    assert not p.held


def test_pod_on_a_node_the_cache_does_not_know_is_held():
    fn = pod("fn", "gw-gone")
    p = plan([fn], roamed(T, since=T - 30), P, Memory(), T)
    assert not p.moves
    assert [h.limit for h in p.held] == [Limit.UNKNOWN_NODE]


def test_nothing_moves_before_the_caches_have_synced():
    fn = pod("fn", "gw-home")
    memory = Memory(pending={fn.uid: Pending("gw-hospital", Reason.ROAMING, T - 20)})
    dev = wearable("patient", T, {"gw-hospital": -55}, "gw-hospital", T - 30)
    p = plan([fn], world(T, [dev], synced=False), P, memory, T, parked=[parked_fn()])
    assert not p.moves
    assert [h.limit for h in p.held] == [Limit.NOT_SYNCED] * 2
    assert p.memory is memory


def test_memory_keeps_moves_for_the_longest_window_and_forgets_gone_pods():
    old = MoveRecord("Deployment/health/a", None, "edge-1", "edge-2", Reason.OFFLOADING, T - 121)
    kept = MoveRecord("Deployment/health/b", None, "edge-1", "edge-2", Reason.OFFLOADING, T - 119)
    memory = Memory(
        pending={
            "gone": Pending("edge-1", Reason.OFFLOADING, T),
            "other": Pending("x", Reason.ROAMING, T),
        },
        moves=(old, kept),
        unheard_since={"dev": T},
    )
    p = plan([], world(T), P, memory, T)
    assert p.memory.moves == (kept,)
    assert set(p.memory.pending) == {"gone", "other"}  # pods not in this plan keep theirs
    forgotten = p.memory.forget(["gone"], devices=["dev"])
    assert set(forgotten.pending) == {"other"}
    assert forgotten.unheard_since == {}


def test_the_plan_says_when_to_look_again():
    fn = pod("fn", "gw-home")
    p = plan([fn], roamed(T + 1, since=T), P, Memory(), T + 1)
    assert p.wake_at == T + 5  # the settle window ends


def test_move_message_is_one_line_with_the_facts():
    fn = pod("fn", "gw-home")
    memory = Memory(pending={fn.uid: Pending("gw-hospital", Reason.ROAMING, T - 20)})
    (move,) = plan([fn], roamed(T, since=T - 30), P, memory, T).moves
    text = move.message()
    assert "\n" not in text
    for part in (
        "Roaming (rollout) Deployment/health/fn pod fn: gw-home -> gw-hospital",
        "nearest to gateway gw-hospital",  # the scorer's reason about the current node
        "rssi -80 dBm -> -55 dBm",
        "load 30% -> 30%",
        "nearest decision 30s old",
        f"policy {P.version}",
    ):
        assert part in text, text


# --- Scale: only the affected pods of a large cluster ---------------------------------------------


def test_a_plan_over_2000_pods_returns_only_the_affected_moves():
    gateways = {f"gw-{g:02d}": "gateway" for g in range(20)}
    nodes = gateways | {"edge-1": "edge", "edge-2": "edge", "cloud-1": "cloud"}
    names = sorted(gateways)
    devices, pods, affected = [], [], set()
    for i in range(2000):
        home = names[i % 20]
        nearest, heard = home, {home: -60.0}
        if i % 401 == 7:  # five patients, on five gateways, walked to the next one
            nearest = names[(i + 1) % 20]
            heard = {home: -80.0, nearest: -55.0}
            affected.add(f"uid-p{i:04d}")
        since = T - 60 if nearest != home else T - 3600
        devices.append(wearable(f"d{i}", T, heard, nearest, since))
        pods.append(pod(f"p{i:04d}", home, device=f"d{i}"))
    snap = world(T, devices, nodes=nodes)
    first = plan(pods, snap, P, Memory(), T)
    assert not first.moves
    assert {h.pod for h in first.held} == affected  # dwell
    p = plan(pods, snap, P, first.memory, T + 10)
    assert {m.pod.uid for m in p.moves if m.pod} == affected
    assert all(m.reason is Reason.ROAMING for m in p.moves)
    assert not p.held


# --- herding: optional moves onto one node, one at a time ----------------------------


def test_optional_moves_onto_an_idle_node_go_one_at_a_time_until_its_load_shows_them():
    # Five balancer pods on a busy edge-1 (score 2) and an idle edge-2 (score 9): each
    # would gain 7 points, but the load data cannot show a move onto edge-2 yet.
    pods = [pod(f"b{i}", "edge-1", function="balancer", device=None) for i in range(5)]
    busy = {"edge-1": 0.8, "edge-2": 0.15}
    memory = Memory()
    first = plan(pods, world(T, load=busy), P, memory, T)  # starts every dwell
    moved = plan(pods, world(T + 10, load=busy), P, first.memory, T + 10)
    assert [m.to_node for m in moved.moves] == ["edge-2"]
    settling = [h for h in moved.held if h.limit is Limit.TARGET_SETTLING]
    assert len(settling) == 4
    assert {h.until for h in settling} == {T + 10 + 30}  # staleData.loadMaxAge
    # Still the old load data 20 s later: still one move only, none more.
    later = plan(pods[1:], world(T + 30, load=busy), P, moved.memory, T + 30)
    assert later.moves == ()
    # Once the load data is newer than the move, the next one may go (the cooldown of
    # the pod that moved is its own business: it is not among these).
    after = plan(pods[1:], world(T + 41, load=busy), P, later.memory, T + 41)
    assert [m.to_node for m in after.moves] == ["edge-2"]


def test_forced_moves_are_not_held_by_a_settling_target():
    # gw-home is over the class's CPU limit: both functions must leave now, and the only
    # place left for them is edge-1 (never the cloud), whatever its load data shows.
    devices = [wearable(d, T, {"gw-home": -55}, "gw-home", T - 600) for d in ("p0", "p1")]
    pods = [pod(f"f{i}", "gw-home", device=f"p{i}") for i in range(2)]
    over = {"gw-home": 0.95}
    memory = plan(pods, world(T, devices, load=over), P, Memory(), T).memory
    p = plan(pods, world(T + 10, devices, load=over), P, memory, T + 10)
    assert sorted((m.pod.name, m.to_node, m.reason) for m in p.moves if m.pod) == [
        ("f0", "edge-1", Reason.OFFLOADING),
        ("f1", "edge-1", Reason.OFFLOADING),
    ]
    assert not [h for h in p.held if h.limit is Limit.TARGET_SETTLING]


def test_a_load_driven_move_waits_one_load_refresh_even_with_a_shorter_dwell():
    # The extender refreshes load every 5 s on its own: a move decided on a load it has
    # not read yet would be scheduled back onto the same node.
    fast = parse_policy(
        POLICY.substitute(away="fallback", min_improvement=2, global_rate=10, node_rate=3).replace(
            "dwell: 10s", "dwell: 1s"
        ),
        "fast.yaml",
    )
    devices = [wearable("p0", T, {"gw-home": -55}, "gw-home", T - 600)]
    fn = pod("f0", "gw-home", device="p0")
    over = {"gw-home": 0.95}
    first = plan([fn], world(T, devices, load=over), fast, Memory(), T)
    assert [(h.limit, h.until) for h in first.held] == [(Limit.DWELL, T + 5.0)]
    early = plan([fn], world(T + 2, devices, load=over), fast, first.memory, T + 2)
    assert early.moves == ()
    (move,) = plan([fn], world(T + 5, devices, load=over), fast, early.memory, T + 5).moves
    assert move.reason is Reason.OFFLOADING


def test_a_feasible_replica_of_a_replicated_workload_is_not_moved_for_a_preference():
    # Two balancer replicas: kube-scheduler spread one onto busy edge-1 (score 2) while
    # edge-2 would score 9. Its spreading outweighs our preference on purpose: no move.
    shared = owner("bal", replicas=2)
    replica = pod("bal-0", "edge-1", function="balancer", device=None, workload=shared)
    busy = {"edge-1": 0.8, "edge-2": 0.15}
    memory = Memory()
    for t in (0, 10, 20, 60):
        p = plan([replica], world(T + t, load=busy), P, memory, T + t)
        memory = p.memory
        assert p.moves == ()
        assert [h.limit for h in p.held] == [Limit.REPLICATED]
    # The same pod alone in its workload moves (the control).
    alone = pod("solo", "edge-1", function="balancer", device=None)
    first = plan([alone], world(T, load=busy), P, Memory(), T)
    (move,) = plan([alone], world(T + 10, load=busy), P, first.memory, T + 10).moves
    assert (move.action, move.to_node) == (Action.ROLLOUT, "edge-2")


# --- A silent gateway: unknown, not away (issue 26 item 2; docs/gateway-writes.md 5) ------


def listed(last_seen: float, rssi: float = -60) -> DeviceFacts:
    """gw-home's report still lists the patient, but gw-home was last seen alive at
    `last_seen` (its Lease not renewed since: monitor gone, node down, an outage)."""
    return DeviceFacts(
        name="patient",
        address=None,
        sightings={"gw-home": Sighting("gw-home", rssi, last_seen, reported=True)},
    )


@pytest.mark.parametrize("away", ["fallback", "park"])
def test_a_silent_gateway_neither_moves_nor_parks_its_devices_functions(away):
    rules = policy(away=away)
    fn = pod("fn", "gw-home")
    memory = Memory()
    for t in range(0, 900, 15):
        p = plan([fn], world(T + t, [listed(T - 40)], {"edge-1": 0.0}), rules, memory, T + t)
        memory = p.memory
        assert not p.moves
        assert [(h.limit, h.reason) for h in p.held] == [(Limit.GATEWAY_SILENT, Reason.DEVICE_AWAY)]
    # the gateway speaks again and no longer lists it: away from then, by the usual rules
    gone_now = DeviceFacts(name="patient", address=None, sightings={})
    p = plan([fn], world(T + 900, [gone_now], {"edge-1": 0.0}), rules, memory, T + 900)
    if away == "fallback":
        p = plan([fn], world(T + 910, [gone_now], {"edge-1": 0.0}), rules, p.memory, T + 910)
        assert [(m.reason, m.to_node) for m in p.moves] == [(Reason.DEVICE_AWAY, "edge-1")]
    else:
        assert [(h.limit, h.until) for h in p.held] == [(Limit.DEVICE_AWAY_WAIT, T + 1020)]


def test_a_live_gateway_hearing_the_device_weakly_is_no_silence():
    """Fresh but below the class threshold: the gateway hears it, just not well enough."""
    fn = pod("fn", "gw-home")
    p = plan([fn], world(T, [listed(T - 1, rssi=-99)]), PARK, Memory(), T)
    assert [h.limit for h in p.held] == [Limit.DEVICE_AWAY_WAIT]
