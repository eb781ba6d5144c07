"""narrow.decide: when a pod is left alone (and why), and which nodes it is pinned to."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from admission_cases import POLICY, expr, facts, pod, required, world
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from extender.admission.fit import PodConstraints
from extender.admission.narrow import Narrowed, Skipped, decide
from extender.scoring import evaluate
from extender.state.snapshot import NodeFacts, Snapshot

REQUIRED_KEY = "requiredDuringSchedulingIgnoredDuringExecution"

NOW = time.time()
NODES = [
    facts("gw1", "gateway"),
    facts("gw2", "gateway"),
    facts("gw3", "gateway"),
    *(facts(f"e{i}", "edge", labels={"zone": "a" if i % 2 else "b"}) for i in range(1, 9)),
    facts("c1", "cloud"),
    facts("c2", "cloud"),
]
LOAD = {n.name: 0.05 * i for i, n in enumerate(NODES)}
WORLD = world(NODES, load=LOAD, heard_by={"gw2": -60}, now=NOW)
PINNED = required({"matchFields": [expr("metadata.name", "In", "e1")]})


def run(p: dict[str, Any], snapshot: Snapshot = WORLD, k: int = 4, seed: int = 0) -> Any:
    return decide(p, snapshot, POLICY, NOW, k, random.Random(seed))


@pytest.mark.parametrize(
    ("p", "snapshot", "k", "reason"),
    [
        ({"metadata": {"name": "p"}}, WORLD, 4, "no spec"),
        (pod(scheduler="default-scheduler"), WORLD, 4, "schedulerName is not"),
        (pod(scheduler=None), WORLD, 4, "schedulerName is not"),
        (pod(nodeName="e1"), WORLD, 4, "already bound"),
        (pod(), WORLD, 0, "narrowing is off"),
        (pod(), WORLD, -1, "narrowing is off"),
        (pod(function=None), WORLD, 4, "names no function class"),
        (pod(annotations=False), WORLD, 4, "names no function class"),
        (pod(function="bitcoin-miner"), WORLD, 4, "'bitcoin-miner' is not in the policy"),
        (pod(), world(NODES, nodes_synced=False), 4, "caches have not synced"),
        (pod(), world(NODES, devices_synced=False), 4, "caches have not synced"),
        (pod(affinity=PINNED), WORLD, 4, "already selects nodes by metadata.name"),
        (pod(affinity=required({"matchExpressions": [expr("zone", "Near", "a")]})), WORLD, 4,
         "constraint not evaluated here: node affinity operator 'Near'"),
        (pod(tolerations=[{"key": "k", "operator": "Gt", "value": "1"}]), WORLD, 4,
         "constraint not evaluated here: toleration operator"),
        # Constraints on other pods or volumes: the pin could strand the pod.
        (pod(affinity={"podAntiAffinity": {REQUIRED_KEY: [{"topologyKey": "h"}]}}), WORLD, 4,
         "required podAntiAffinity"),
        (pod(affinity={"podAffinity": {REQUIRED_KEY: [{"topologyKey": "h"}]}}), WORLD, 4,
         "required podAffinity"),
        (pod(topologySpreadConstraints=[{"maxSkew": 1, "topologyKey": "zone"}]), WORLD, 4,
         "DoNotSchedule topology spread"),
        (pod(volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]), WORLD, 4,
         "a 'persistentVolumeClaim' volume"),
        (pod(volumes=[{"name": "d", "ephemeral": {}}]), WORLD, 4, "a 'ephemeral' volume"),
        # in-tree disks: an attach limit per node (CSI migration) or a conflict on a node
        (pod(volumes=[{"name": "d", "awsElasticBlockStore": {"volumeID": "v"}}]), WORLD, 4,
         "a 'awsElasticBlockStore' volume"),
        (pod(volumes=[{"name": "d", "rbd": {"image": "i", "monitors": ["m"]}}]), WORLD, 4,
         "a 'rbd' volume"),
        (pod(volumes=[{"name": "d", "iscsi": {"iqn": "q"}}]), WORLD, 4, "a 'iscsi' volume"),
        (pod(containers=[{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}]}]),
         WORLD, 4, "hostPort"),
        (pod(resourceClaims=[{"name": "gpu", "resourceClaimName": "c"}]), WORLD, 4,
         "resource claim"),
        # Everything the class may use is refused by the scorer (overloaded) ...
        (pod(), world(NODES, load={n.name: 0.99 for n in NODES}), 4, "no node is feasible now"),
        # ... or the pod's own constraints exclude every node the scorer keeps.
        (pod(nodeSelector={"cloud4iot.io/tier": "cloud"}), WORLD, 4, "no node is feasible now"),
        # A confidential pod whose wearable nobody hears, with the edge refused by taints.
        (pod("mhealth-consolidator", "wearable"),
         world([facts("gw1", "gateway"),
                facts("e1", taints=[{"key": "k", "effect": "NoSchedule"}])]),
         4, "no node is feasible now"),
    ],
)  # fmt: skip
def test_pods_left_alone_say_why(
    p: dict[str, Any], snapshot: Snapshot, k: int, reason: str
) -> None:
    outcome = run(p, snapshot, k)
    assert isinstance(outcome, Skipped)
    assert reason in outcome.reason


def test_soft_constraints_on_other_pods_do_not_stop_narrowing() -> None:
    preferred = {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1}]}
    soft = pod(
        affinity={"podAntiAffinity": preferred},
        topologySpreadConstraints=[
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}
        ],
        # no scheduler plugin filters on an emptyDir, a configMap or an inline CSI volume
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {"name": "conf", "configMap": {"name": "c"}},
            {"name": "secrets", "csi": {"driver": "secrets-store.csi.k8s.io"}},
        ],
    )
    pool = feasible_admitted(soft, WORLD)
    assert len(pool) > 4
    assert_best(run(soft), pool, 4)


def test_the_skip_cases_are_narrowed_once_the_cause_is_gone() -> None:
    # The baseline the table above varies: a classed pod of ours in a synced world,
    # pinned to the 4 best of what the scorer keeps ...
    plain, zone_a = pod(), pod(nodeSelector={"zone": "a"})
    pool = feasible_admitted(plain, WORLD)
    assert len(pool) > 4
    assert_best(run(plain), pool, 4)
    # ... and to the best of those its own nodeSelector admits (e1, e3, e5, e7).
    pool_a = feasible_admitted(zone_a, WORLD)
    assert sorted(pool_a) == ["e1", "e3", "e5", "e7"]
    assert_best(run(zone_a), pool_a, 4)
    assert sorted(run(zone_a).nodes) == ["e1", "e3", "e5", "e7"]


def feasible_admitted(p: dict[str, Any], snapshot: Snapshot) -> dict[str, int]:
    """The oracle: node -> score of what the scorer keeps and the pod's constraints admit."""
    constraints = PodConstraints.from_spec(p["spec"])
    return {
        v.node: v.score
        for v in evaluate(p, snapshot, POLICY, NOW).verdicts()
        if v.feasible and constraints.admits(snapshot.nodes[v.node])
    }


def assert_best(outcome: Any, pool: dict[str, int], k: int) -> None:
    assert isinstance(outcome, Narrowed), outcome
    chosen = outcome.nodes
    assert len(set(chosen)) == len(chosen) == min(k, len(pool))
    # The scorer's count, before the pod's own constraints (the annotation's "of N").
    assert outcome.feasible >= len(pool)
    assert set(chosen) <= set(pool)
    scores = [pool[n] for n in chosen]
    assert scores == sorted(scores, reverse=True)  # best first
    rest = [s for n, s in pool.items() if n not in chosen]
    assert not rest or min(scores) >= max(rest)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 100])
@pytest.mark.parametrize("function", ["anonymiser", "engine-diagnostic"])
def test_the_best_k_feasible_nodes_are_chosen(k: int, function: str) -> None:
    p = pod(function)
    pool = feasible_admitted(p, WORLD)
    assert len(set(pool.values())) > 2  # the world spreads the scores: the order matters
    for seed in range(5):
        assert_best(run(p, k=k, seed=seed), pool, k)


def test_a_confidential_pod_is_pinned_to_the_gateway_hearing_its_device() -> None:
    p = pod("mhealth-consolidator", "wearable")
    outcome = run(p, k=32)
    assert outcome == Narrowed(("gw2",), 1)
    # Not heard at all: it falls back to the edge (whenDeviceAway: fallback), never the cloud.
    alone = run(p, world(NODES, load=LOAD, now=NOW), k=32)
    assert isinstance(alone, Narrowed)
    assert {n[0] for n in alone.nodes} == {"e"}


def test_nodes_the_pods_own_constraints_exclude_are_never_chosen() -> None:
    taint = {"key": "dedicated", "value": "ml", "effect": "NoSchedule"}
    nodes = [
        facts("best", labels={"zone": "a"}, taints=[taint]),  # tainted
        facts("second", labels={"zone": "b"}),  # wrong zone for the selector
        facts("cordoned", labels={"zone": "a"}, unschedulable=True),
        *(facts(f"ok{i}", labels={"zone": "a"}) for i in range(4)),
    ]
    load = {"best": 0.0, "second": 0.0, "cordoned": 0.0, **{f"ok{i}": 0.7 for i in range(4)}}
    snapshot = world(nodes, load=load, now=NOW)
    scores = {v.node: v.score for v in evaluate(pod(), snapshot, POLICY, NOW).verdicts()}
    assert scores["best"] > scores["ok0"]  # the excluded nodes would win on score
    assert scores["second"] > scores["ok0"]
    assert scores["cordoned"] > scores["ok0"]
    p = pod(nodeSelector={"zone": "a"})
    for seed in range(10):
        outcome = run(p, snapshot, k=3, seed=seed)
        assert isinstance(outcome, Narrowed)
        assert outcome.feasible == 7  # what the scorer keeps; 4 of them the pod admits
        assert not {"best", "second", "cordoned"} & set(outcome.nodes)
    tolerant = pod(
        nodeSelector={"zone": "a"}, tolerations=[{"key": "dedicated", "operator": "Exists"}]
    )
    assert run(tolerant, snapshot, k=1) == Narrowed(("best",), 7)


EQUALS = [facts(f"e{i:02}") for i in range(20)]


def test_ties_are_drawn_at_random_so_pods_spread() -> None:
    snapshot = world([facts("top"), *EQUALS], load={"top": 0.0}, now=NOW)
    pool = feasible_admitted(pod(), snapshot)
    assert pool["top"] > max(s for n, s in pool.items() if n != "top")
    assert len({s for n, s in pool.items() if n != "top"}) == 1  # 20 equal scores
    picks = []
    for seed in range(30):
        outcome = run(pod(), snapshot, k=3, seed=seed)
        assert_best(outcome, pool, 3)
        assert outcome.nodes[0] == "top"  # the best is never drawn, only the tie at the cut
        picks.append(frozenset(outcome.nodes))
    assert len(set(picks)) > 10
    assert len(frozenset().union(*picks)) > 12  # most of the tied nodes get their turn


def test_one_generator_spreads_successive_pods() -> None:
    snapshot = world(EQUALS, now=NOW)
    rng = random.Random(7)
    picks = set()
    for _ in range(20):
        outcome = decide(pod(), snapshot, POLICY, NOW, 2, rng)
        assert isinstance(outcome, Narrowed)
        picks.add(outcome.nodes)
    assert len(picks) > 5


LABELS = st.fixed_dictionaries(
    {}, optional={"zone": st.sampled_from(["a", "b"]), "gpu": st.sampled_from(["1", "4", "x"])}
)
TAINTS = st.lists(
    st.builds(
        lambda key, effect: {"key": key, "effect": effect},
        st.sampled_from(["dedicated", "spot"]),
        st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule"]),
    ),
    max_size=1,
)


@st.composite
def worlds(draw: st.DrawFn) -> Snapshot:
    count = draw(st.integers(1, 40))
    nodes: list[NodeFacts] = [
        facts(
            f"n{i}",
            draw(st.sampled_from(["gateway", "edge", "cloud", None])),
            labels=draw(LABELS),
            taints=draw(TAINTS),
            unschedulable=draw(st.sampled_from([False, False, False, True])),
        )
        for i in range(count)
    ]
    load = {n.name: draw(st.floats(0, 1)) for n in nodes if draw(st.booleans())}
    heard = draw(st.dictionaries(st.sampled_from([n.name for n in nodes]), st.floats(-95, -40)))
    return world(nodes, load=load, heard_by=heard, now=NOW)


SPECS = st.fixed_dictionaries(
    {},
    optional={
        "nodeSelector": st.just({"zone": "a"}),
        "affinity": st.sampled_from(
            [
                required({"matchExpressions": [expr("gpu", "Gt", "2")]},
                         {"matchExpressions": [expr("zone", "NotIn", "a")]}),
                required({"matchExpressions": [expr("gpu", "Exists"), expr("zone", "In", "b")]}),
            ]
        ),
        "tolerations": st.sampled_from(
            [[{"operator": "Exists"}], [{"key": "dedicated", "operator": "Exists"}],
             [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]]
        ),
    },
)  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    snapshot=worlds(),
    spec=SPECS,
    function=st.sampled_from(["anonymiser", "engine-diagnostic", "mhealth-consolidator"]),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**32),
)
def test_narrowing_picks_the_best_k_of_what_the_scheduler_would_admit(
    snapshot: Snapshot, spec: dict[str, Any], function: str, k: int, seed: int
) -> None:
    p = pod(function, "wearable", **spec)
    pool = feasible_admitted(p, snapshot)
    outcome = run(p, snapshot, k=k, seed=seed)
    event("narrowed" if pool else "nothing feasible")
    event("the cut falls inside the pool" if 0 < k < len(pool) else "the whole pool is taken")
    if not pool:
        assert outcome == Skipped("no node is feasible now: left to the scheduler's retries")
    else:
        assert_best(outcome, pool, k)
