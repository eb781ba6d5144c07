"""The per-world tables (scoring/table.py) never change a verdict.

On random worlds, pods and clocks, `evaluate` with a `TableCache` (the path the
webhook, admission and the rebalancer take) must answer exactly what the plain
per-node evaluation (no cache) answers for the same names. The same
snapshot object is asked repeatedly, at moving clocks and after device events,
so a table that outlived its world (a load sample gone stale, a device change)
would be caught. A few direct checks pin the invalidation rules.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud4iot.policy.loader import parse_policy
from cloud4iot.policy.schema import PlacementPolicy
from extender.scoring import Code, PodFacts, TableCache, Verdict, evaluate
from extender.state.snapshot import DeviceFacts, LoadSample, NodeFacts, Sighting, Snapshot
from tests.scoring.test_scorer_table import POLICY_YAML

NOW = 1_800_000_000.0
POLICIES: list[PlacementPolicy] = [
    parse_policy(POLICY_YAML.replace("ON_STALE", mode), source=f"fast-{mode}").policy
    for mode in ("failOpen", "failClosed")
]
CLASSES = ("wearable", "engine", "batch", "nope", None)
TIERS = ("gateway", "gateway", "edge", "cloud", None, "fog")
ARCHS = ("arm64", "amd64", None)

node_st = st.builds(
    lambda i, tier, arch: NodeFacts(f"n{i}", tier, arch),
    st.integers(0, 40),
    st.sampled_from(TIERS),
    st.sampled_from(ARCHS),
)
load_st = st.one_of(
    st.none(),
    st.builds(
        LoadSample,
        st.one_of(st.none(), st.floats(0, 1)),
        st.one_of(st.none(), st.floats(0, 1)),
        st.floats(NOW - 60, NOW),
    ),
)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Snapshot, list[str]]:
    nodes = {n.name: n for n in draw(st.lists(node_st, min_size=1, max_size=25))}
    load = {n: s for n in nodes if (s := draw(load_st)) is not None}
    devices = {}
    for d in ("band", "watch"):
        heard_from = draw(st.lists(st.sampled_from([*nodes, "ghost"]), max_size=4, unique=True))
        sightings = {
            g: Sighting(g, draw(st.floats(-100, -30)), draw(st.floats(NOW - 60, NOW)))
            for g in heard_from
        }
        nearest = draw(st.one_of(st.none(), st.sampled_from([*nodes, "ghost"])))
        devices[d] = DeviceFacts(d, None, sightings, nearest=nearest)
    snapshot = Snapshot(
        nodes=nodes,
        devices=devices,
        load=load,
        nodes_synced=True,
        devices_synced=draw(st.booleans()),
        load_refreshed_at=NOW,
    )
    # What kube-scheduler sends: a subset in any order, maybe a name we do not know.
    names = draw(st.permutations([*nodes, "unknown-node"]))
    return snapshot, names[: draw(st.integers(1, len(names)))]


pod_st = st.builds(
    lambda fn, dev, mode, archs: PodFacts("p", "ns", fn, dev, mode, frozenset(archs)),
    st.sampled_from(CLASSES),
    st.sampled_from(("band", "watch", "lost", None)),
    st.sampled_from(("default", "intensive", None)),
    st.sampled_from(((), ("arm64",), ("amd64", "arm64"))),
)


def plain(
    pod: PodFacts, names: list[str], snap: Snapshot, policy: PlacementPolicy, now: float
) -> list[Verdict]:
    # No table cache: every named node is judged.
    return evaluate(pod, snap, policy, now, names=names).verdicts()


def every_node(
    pod: PodFacts, snap: Snapshot, policy: PlacementPolicy, now: float, tables: TableCache
) -> list[Verdict]:
    return evaluate(pod, snap, policy, now, tables=tables).verdicts()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    world=worlds(),
    pods=st.lists(pod_st, min_size=1, max_size=6),
    policy=st.sampled_from(POLICIES),
    clocks=st.lists(st.floats(0, 45), min_size=1, max_size=4),
)
def test_tables_answer_what_the_plain_path_answers(
    world: tuple[Snapshot, list[str]],
    pods: list[PodFacts],
    policy: PlacementPolicy,
    clocks: list[float],
) -> None:
    snap, names = world
    tables = TableCache()
    for offset in sorted(clocks):  # time moves on; the tables must notice stale load
        now = NOW + offset
        for kind in pods:
            # Pods of one kind with different devices share a table: what one device
            # contributed must never leak into another's answer.
            for device in ("band", "watch", "lost", None):
                pod = replace(kind, device=device)
                fast = evaluate(pod, snap, policy, now, names=names, tables=tables).verdicts()
                assert fast == plain(pod, names, snap, policy, now), (pod, now)
        # A device event: a new snapshot sharing nodes and load (the tables serve it).
        band = snap.devices["band"]
        snap = snap.with_devices({**snap.devices, "band": replace(band, sightings={})})
        # A node event: one NodeFacts replaced, the others shared (the tables are
        # refreshed node by node).
        first = next(iter(snap.nodes.values()))
        moved = replace(first, tier="edge" if first.tier == "gateway" else "gateway")
        snap = snap.with_nodes({**snap.nodes, first.name: moved})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    world=worlds(),
    pods=st.lists(pod_st, min_size=1, max_size=4),
    policy=st.sampled_from(POLICIES),
    clocks=st.lists(st.floats(0, 45), min_size=1, max_size=3),
)
def test_the_ranking_admission_reads_is_what_every_node_s_verdict_says(
    world: tuple[Snapshot, list[str]],
    pods: list[PodFacts],
    policy: PlacementPolicy,
    clocks: list[float],
) -> None:
    """by_score (admission narrowing) against the plain verdict of every node:
    the same feasible nodes, each in its score's group, groups best first, the count."""
    snap, _ = world
    names = list(snap.nodes)
    tables = TableCache()
    for offset in sorted(clocks):
        now = NOW + offset
        for kind in pods:
            for device in ("band", "watch", "lost", None):
                pod = replace(kind, device=device)
                expected: dict[int, set[str]] = {}
                for v in plain(pod, names, snap, policy, now):
                    if v.feasible:
                        expected.setdefault(v.score, set()).add(v.node)
                # Without a cache, then twice with one: the second answer comes from a
                # kept table and must agree.
                for cache in (None, tables, tables):
                    ranking, count = evaluate(pod, snap, policy, now, tables=cache).by_score()
                    got = {score: set(group) for score, group in ranking}
                    assert got == expected, (pod, now)
                    assert [s for s, _ in ranking] == sorted(expected, reverse=True)
                    assert all(len(set(g)) == len(g) for _, g in ranking)
                    assert count == sum(map(len, expected.values()))
        band = snap.devices["band"]
        snap = snap.with_devices({**snap.devices, "band": replace(band, sightings={})})


def test_a_weak_sighting_of_one_device_is_not_another_devices_reason() -> None:
    nodes = {"g": NodeFacts("g", "gateway", "arm64"), "e": NodeFacts("e", "edge", "amd64")}
    weak = DeviceFacts("band", None, {"g": Sighting("g", -99.0, NOW)})
    other = DeviceFacts("watch", None, {})
    snap = Snapshot(
        nodes=nodes,
        devices={"band": weak, "watch": other},
        nodes_synced=True,
        devices_synced=True,
    )
    policy = POLICIES[0]
    tables = TableCache()
    first = every_node(PodFacts("p", "ns", "wearable", "band"), snap, policy, NOW, tables)
    second = every_node(PodFacts("q", "ns", "wearable", "watch"), snap, policy, NOW, tables)
    assert "-99 dBm" in first[0].reason
    assert second[0].reason == "gateway does not hear the device"


def test_a_table_is_built_once_per_kind_and_shared_across_device_events() -> None:
    nodes = {f"e{i}": NodeFacts(f"e{i}", "edge", "amd64") for i in range(50)}
    snap = Snapshot(nodes=nodes, load={}, nodes_synced=True, devices_synced=True)
    policy = POLICIES[0]
    pod = PodFacts("p", "ns", "batch")
    tables = TableCache()
    every_node(pod, snap, policy, NOW, tables)
    [table] = tables.tables()
    after_event = snap.with_devices({"band": DeviceFacts("band", None, {})})
    every_node(pod, after_event, policy, NOW + 1, tables)
    assert tables.tables() == [table]  # the same object: not rebuilt
    assert tables.tables()[0] is table
    # New nodes: the old table must not serve.
    grown = after_event.with_nodes({**nodes, "e50": NodeFacts("e50", "edge", "amd64")})
    verdicts = every_node(pod, grown, policy, NOW + 2, tables)
    assert len(verdicts) == 51
    assert all(v.feasible for v in verdicts)


def test_a_sample_going_stale_rebuilds_the_table() -> None:
    nodes = {"c": NodeFacts("c", "cloud", "amd64")}
    snap = Snapshot(
        nodes=nodes, load={"c": LoadSample(0.1, 0.1, NOW)}, nodes_synced=True, devices_synced=True
    )
    fail_closed = POLICIES[1]  # loadMaxAge 30s
    pod = PodFacts("p", "ns", "batch")
    tables = TableCache()
    [fresh] = every_node(pod, snap, fail_closed, NOW + 30, tables)
    [stale] = every_node(pod, snap, fail_closed, NOW + 30.5, tables)
    assert fresh.feasible
    assert not stale.feasible
    assert stale.code is Code.STALE_LOAD


def test_hostile_kinds_cannot_grow_the_cache() -> None:
    snap = Snapshot(nodes={"e": NodeFacts("e", "edge", "amd64")}, nodes_synced=True)
    tables = TableCache()
    for i in range(1000):
        every_node(PodFacts("p", "ns", f"class-{i}"), snap, POLICIES[0], NOW, tables)
    assert 0 < len(tables) <= 128


def test_a_node_event_judges_only_the_changed_node_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import extender.scoring.scorer as scorer

    calls: list[str] = []
    real = scorer.judge

    def counting(ctx: Any, node: NodeFacts) -> Verdict:
        calls.append(node.name)
        return real(ctx, node)

    monkeypatch.setattr(scorer, "judge", counting)
    nodes = {f"e{i}": NodeFacts(f"e{i}", "edge", "amd64") for i in range(50)}
    snap = Snapshot(nodes=nodes, load={}, nodes_synced=True, devices_synced=True)
    policy, pod, tables = POLICIES[0], PodFacts("p", "ns", "batch"), TableCache()
    every_node(pod, snap, policy, NOW, tables)
    assert len(calls) == 50
    calls.clear()
    # e7 becomes a gateway (batch may not run there), e50 joins, e3 leaves.
    changed = {**nodes, "e7": NodeFacts("e7", "gateway", "amd64")}
    changed["e50"] = NodeFacts("e50", "edge", "amd64")
    del changed["e3"]
    verdicts = {
        v.node: v for v in every_node(pod, snap.with_nodes(changed), policy, NOW + 1, tables)
    }
    assert sorted(calls) == ["e50", "e7"]
    assert set(verdicts) == set(changed)
    assert not verdicts["e7"].feasible
    assert verdicts["e50"].feasible
    assert verdicts == {
        v.node: v for v in plain(pod, list(changed), snap.with_nodes(changed), policy, NOW + 1)
    }
