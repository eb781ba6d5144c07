"""A move by eviction whose answer the test chooses (the rebalancer tests' fake API)."""

from __future__ import annotations

from rebalancer.workloads import PodRecord
from tests.rebalancer.test_rebalancer_actor import NOW, World, wearable


async def an_eviction_answered(status: int | None) -> tuple[World, PodRecord]:
    """The patient at the hospital (a forced Roaming) and its consolidator on gw-home,
    moved by eviction (maxSurge 0): one step, the eviction answered ``status``
    (None: accepted). The world and the pod it tried to evict."""
    world = World()
    world.core.evict_status = status
    world.show(wearable())
    pod = world.deploy("consolidator", "gw-home", max_surge=0)
    await world.step(NOW)
    return world, pod
