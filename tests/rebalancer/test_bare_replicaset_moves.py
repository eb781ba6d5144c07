"""A bare ReplicaSet's function (no Deployment above it) keeps its cooldown across a
leader change: the move is recorded on the ReplicaSet, and a new term reads it there.

Before: nothing was recorded for such a move, so the next leader evicted the pod again
20 s later (a ping-pong between the two gateways, at every leader change)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cloud4iot.vocabulary import LAST_MOVE_ANNOTATION, MOVES_ANNOTATION
from tests.rebalancer.test_rebalancer_actor import (
    COOLDOWN,
    NOW,
    NS,
    World,
    note_of,
    recorded,
    start_term,
)
from tests.rebalancer.test_rebalancer_actor import world as world  # the fixture


def bare_replicaset(world: World, name: str, node: str, note: str | None) -> None:
    """A ReplicaSet no Deployment owns, as the apiserver returns it, and its one pod."""
    annotations = {LAST_MOVE_ANNOTATION: note, MOVES_ANNOTATION: f"[{note}]"} if note else {}
    world.apps.replicasets[(NS, name)] = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {"replicas": 1},
    }
    world.rebalancer.observe_replicaset(f"{NS}/{name}", None, None)  # owned by nothing
    world.pod(f"{name}-p1", node, "anonymiser", None, name)


@pytest.mark.parametrize("on_record", [True, False])
async def test_a_new_leader_reads_a_bare_replicasets_move_record_and_holds_it(
    world: World, on_record: bool
) -> None:
    # The last leader moved the pod 30 s ago and recorded it on the ReplicaSet; a new
    # term must not move it again (anonymiser prefers the edge: an optional move).
    bare_replicaset(world, "anon-rs", "gw-home", recorded(NOW - 30) if on_record else None)
    await start_term(world)
    await world.step(NOW)
    assert world.apps.reads == [(NS, "anon-rs")]
    if on_record:
        assert [r.workload for r in world.rebalancer.memory.moves] == [f"ReplicaSet/{NS}/anon-rs"]
        for t in (5, 60):
            await world.step(NOW + t)
        assert world.core.evictions == []
        assert world.held("cooldown-workload") >= 1
        await world.step(NOW - 30 + COOLDOWN)  # the cooldown is over: now it may move
    else:  # the control: nothing on record, the move is made after one load refresh
        await world.step(NOW + 5)
    assert [name for _, name, _ in world.core.evictions] == ["anon-rs-p1"]


async def test_an_eviction_of_a_bare_replicasets_pod_is_recorded_on_the_replicaset(
    world: World,
) -> None:
    bare_replicaset(world, "anon-rs", "gw-home", recorded(NOW - 3600))
    await start_term(world)
    for t in (0, 5):
        await world.step(NOW + t)
    assert [name for _, name, _ in world.core.evictions] == ["anon-rs-p1"]
    ((kind, namespace, name, body),) = world.apps.patches
    assert (kind, namespace, name) == ("ReplicaSet", NS, "anon-rs")
    assert set(body) == {"metadata"}  # annotations only: the pods are not touched
    note: dict[str, Any] = note_of(body)
    assert (note["from"], note["to"]) == ("gw-home", "edge-1")
    moves = orjson.loads(body["metadata"]["annotations"][MOVES_ANNOTATION])
    assert [m["at"] for m in moves] == [NOW - 3600, note["at"]]  # appended to the record
