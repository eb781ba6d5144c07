"""A move's eviction is bound to the pod judged (a uid precondition, as recreates are).

A StatefulSet replica replaced while the plan runs off the event loop (seconds on a
full pass at scale) is a new pod of the same name: without the precondition the
eviction hit the new, just started replica. With it the apiserver answers 409; the
move is moot (not made: not recorded, no Warning, no backoff).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rebalancer.workloads import PodRecord
from tests.rebalancer.test_rebalancer_actor import NOW, NS, World, pod_obj, wearable


def sts_pod(world: World, name: str, node: str, ready: bool, uid: str) -> PodRecord:
    obj = pod_obj(name, node, "mhealth-consolidator", "patient", None)
    obj["metadata"]["uid"] = uid
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "eng", "controller": True}
    ]
    if not ready:
        obj["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    record = PodRecord.from_pod(obj)
    world.rebalancer.observe_pod(record.key, world.pods.get(record.key), record)
    world.pods[record.key] = record
    return record


async def test_the_eviction_of_a_planned_move_is_bound_to_the_judged_pod(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    world.show(wearable())  # a forced Roaming of eng-0 (gw-home -> gw-hospital)
    judged = sts_pod(world, "eng-0", "gw-home", ready=True, uid="uid-old")
    real = asyncio.to_thread

    async def plan_while_the_watch_delivers(fn: Any, *args: Any, **kw: Any) -> Any:
        result = await real(fn, *args, **kw)
        # Meanwhile eng-0 was deleted (a drain, kubectl delete) and made again: a new uid.
        world.delete_pod(judged.key)
        sts_pod(world, "eng-0", "gw-hospital", ready=False, uid="uid-new")
        return result

    monkeypatch.setattr("rebalancer.actor.asyncio.to_thread", plan_while_the_watch_delivers)
    await world.step(NOW)
    ((_, name, body),) = world.core.evictions
    assert name == "eng-0"
    assert body["deleteOptions"] == {"preconditions": {"uid": "uid-old"}}


@pytest.mark.parametrize("status", [404, 409])
async def test_an_eviction_of_a_pod_gone_or_replaced_is_moot(status: int) -> None:
    world = World()
    world.core.evict_status = status
    world.show(wearable())
    sts_pod(world, "eng-0", "gw-home", ready=True, uid="uid-old")
    await world.step(NOW)
    assert len(world.core.evictions) == 1
    assert world.core.events == []  # no Warning: nothing was refused
    assert world.rebalancer.memory.moves == ()  # not made: no cooldown
    assert world.rebalancer.evictor.backoff == {}
    assert world.rebalancer.evictor.evicted == {}
    assert world.moves("Roaming", "evict", "failed") == 0
    assert world.moves("Roaming", "evict", "ok") == 0
    assert f"StatefulSet/{NS}/eng" not in {k for k, _ in world.rebalancer.evictor.warned}
