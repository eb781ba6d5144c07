"""A StatefulSet (not watched) is judged by its pods: as many replicas as the index
holds, settled while every one runs Ready. It counted as one settled replica, so a
healthy replica was evicted while a sibling was down (the function lost its last Ready
replica), and the REPLICATED rule never applied to it.
"""

from __future__ import annotations

from extender.state.snapshot import LoadSample
from rebalancer.model import Kind
from rebalancer.workloads import PodIndex, PodRecord, statefulset_workload
from tests.rebalancer.test_rebalancer_actor import NOW, NS, World, loads, pod_obj, wearable


def sts_obj(name: str, node: str | None, ready: bool, uid: str | None = None) -> PodRecord:
    obj = pod_obj(name, node, "mhealth-consolidator", "patient", None)
    obj["metadata"]["uid"] = uid or f"uid-{name}"
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "eng", "controller": True}
    ]
    if not ready:
        obj["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    return PodRecord.from_pod(obj)


def sts_pod(world: World, name: str, node: str, ready: bool, uid: str | None = None) -> PodRecord:
    record = sts_obj(name, node, ready, uid)
    world.rebalancer.observe_pod(record.key, world.pods.get(record.key), record)
    world.pods[record.key] = record
    return record


def test_replicas_and_settled_come_from_the_pods_in_the_index() -> None:
    index = PodIndex()
    assert statefulset_workload(NS, "eng", index).replicas == 1  # none seen: one
    for record in (sts_obj("eng-0", "gw-home", True), sts_obj("eng-1", "edge-1", True)):
        index.observe(record.key, None, record)
    w = statefulset_workload(NS, "eng", index)
    assert (w.kind, w.replicas, w.settled) == (Kind.STATEFUL_SET, 2, True)
    down = sts_obj("eng-1", "edge-1", False)
    index.observe(down.key, index.pods[down.key], down)
    assert statefulset_workload(NS, "eng", index).settled is False
    pending = sts_obj("eng-1", None, True)
    index.observe(pending.key, index.pods[pending.key], pending)
    assert statefulset_workload(NS, "eng", index).settled is False


async def test_no_eviction_of_the_last_ready_replica_of_a_statefulset() -> None:
    world = World()
    world.show(wearable())  # the patient walked to the hospital: a forced Roaming move
    sts_pod(world, "eng-0", "gw-home", ready=True)
    sts_pod(world, "eng-1", "gw-hospital", ready=False)  # crash-looping / starting
    await world.step(NOW)
    assert world.core.evictions == []
    assert world.held("rollout-in-progress") == 1
    # The sibling becomes Ready: that alone re-plans eng-0, which may go now.
    sts_pod(world, "eng-1", "gw-hospital", ready=True)
    assert f"{NS}/eng-0" in world.rebalancer.dirty
    await world.step(NOW + 1)
    assert [name for _, name, _ in world.core.evictions] == ["eng-0"]


async def a_preference_for_gw_home(replicas: int) -> World:
    """The engine heard near gw-home, edge-1 loaded (a preference, not a forced move) and a
    StatefulSet of ``replicas`` pods of a feasible-everywhere class on edge-1: 30 s of
    steps."""
    world = World()
    world.show(wearable(name="engine", heard={"gw-home": -60.0}, nearest="gw-home"))
    world.set_load({**loads(), "edge-1": LoadSample(cpu=0.7, memory=0.3, at=NOW)})
    for i in range(replicas):
        obj = pod_obj(f"eng-{i}", "edge-1", "engine-diagnostic", "engine", None)
        obj["metadata"]["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "eng", "controller": True}
        ]
        rec = PodRecord.from_pod(obj)
        world.rebalancer.observe_pod(rec.key, None, rec)
    for t in range(0, 30, 2):
        await world.step(NOW + t)
    return world


async def test_a_replicated_statefulset_is_not_moved_for_a_preference() -> None:
    world = await a_preference_for_gw_home(replicas=3)
    assert world.core.evictions == []
    assert world.held("replicated") == 3


async def test_a_single_replica_statefulset_is_still_moved_for_a_preference() -> None:
    world = await a_preference_for_gw_home(replicas=1)
    assert [name for _, name, _ in world.core.evictions] == ["eng-0"]
