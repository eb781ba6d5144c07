"""A refused move backs off: its workload is not planned again for 10 s, doubling per
refusal in a row up to 5 min, reset by a move made; logged once per kind of refusal.

A parked Deployment is considered on every step (~1.2 s): a refused unpark (403 from
RBAC or an admission webhook, 422) was retried, and logged, on every one for ever.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from typing import Any

import pytest
from kubernetes.aio.client.exceptions import ApiException

from cloud4iot.vocabulary import PARKED_ANNOTATION
from rebalancer.evictor import BACKOFF_FIRST, BACKOFF_MAX
from rebalancer.model import MoveRecord, Reason
from tests.rebalancer.answered_evictions import an_eviction_answered
from tests.rebalancer.test_rebalancer_actor import NOW, NS, PARK_CLASS, FakeApps, World, wearable


class RefusingApps(FakeApps):
    """An admission webhook or RBAC refusing Deployment changes while `status` is set."""

    status: int | None = 403

    async def patch_namespaced_deployment(
        self, name: str, namespace: str, body: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        self.patches.append(("Deployment", namespace, name, body))
        if self.status is not None:
            raise ApiException(status=self.status, reason="Forbidden")
        return {}


def parked_world(status: int | None = 403) -> World:
    apps = RefusingApps()
    apps.status = status
    world = World(apps=apps)
    world.rebalancer.observe_replicaset(f"{NS}/reader-rs1", None, "reader")
    world.deployment(
        "reader", function=PARK_CLASS, replicas=0, annotations={PARKED_ANNOTATION: "2"}
    )
    return world


async def tick(world: World, t: float) -> None:
    """One step of the run loop; the patient at home, heard by gw-home all along."""
    world.show(wearable(heard={"gw-home": -50.0}, nearest="gw-home", since=NOW - 60, at=t))
    await world.step(t)


@pytest.mark.parametrize("status", [403, 422])
async def test_a_refused_unpark_backs_off_and_warns_once(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    world = parked_world(status)
    caplog.set_level(logging.DEBUG, logger="rebalancer")
    t, attempts = NOW, []
    while t < NOW + 360:  # six minutes of the run loop's 1.2 s steps
        before = len(world.apps.patches)
        await tick(world, t)
        if len(world.apps.patches) > before:
            attempts.append(round(t - NOW))
        t += 1.2
    # 0, then 10, 20, 40, 80 and 160 s later (rounded up to the next step), then 5 min.
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) == 6, attempts
    for gap, delay in zip(gaps, (10, 20, 40, 80, 160), strict=True):
        assert delay <= gap <= delay + 2, attempts
    warnings = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "unpark" in r.getMessage()
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert world.moves("DeviceBack", "unpark", "failed") == 6


async def test_a_made_move_resets_the_backoff() -> None:
    world = parked_world()
    apps = world.apps
    assert isinstance(apps, RefusingApps)
    for t in (0.0, 5.0, 10.0, 25.0, 30.0):
        await tick(world, NOW + t)
    assert len(apps.patches) == 3  # at 0, 10 and 30 s
    apps.status = None  # the webhook is fixed
    await tick(world, NOW + 70.0)
    assert len(apps.patches) == 4
    assert world.moves("DeviceBack", "unpark", "ok") == 1
    assert world.rebalancer.evictor.backoff == {}


async def test_the_backoff_stops_doubling_at_its_maximum() -> None:
    world = parked_world()
    t, attempts = NOW, []
    while t < NOW + 3 * BACKOFF_MAX + 320:
        before = len(world.apps.patches)
        await tick(world, t)
        if len(world.apps.patches) > before:
            attempts.append(t)
        t += 5.0
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] == pytest.approx(BACKOFF_FIRST, abs=5)
    assert gaps[-3:] == pytest.approx([BACKOFF_MAX] * 3, abs=5)


async def test_a_refused_rollout_backs_off_its_pod_and_plans_it_again_when_due() -> None:
    apps = RefusingApps()
    apps.status = 422
    world = World(apps=apps)
    world.show(wearable())  # the patient walked to gw-hospital: a forced Roaming
    pod = world.deploy("consolidator", "gw-home")
    await world.step(NOW)
    assert len(apps.patches) == 1
    for t in (1.0, 3.0, 6.0, 9.0):  # heartbeats re-plan the pod
        world.show(wearable(at=NOW + t))
        await world.step(NOW + t)
    assert len(apps.patches) == 1
    assert world.rebalancer._due.get(pod.key) == NOW + BACKOFF_FIRST
    apps.status = None
    await world.step(NOW + BACKOFF_FIRST)  # due: planned again with nothing else changing
    assert len(apps.patches) == 2
    assert world.moves("Roaming", "rollout", "ok") == 1


async def test_a_disruption_budget_refusal_is_not_backed_off() -> None:
    world, pod = await an_eviction_answered(429)
    world.pod(pod.name, "gw-home", rs="consolidator-rs1")  # re-planned by a pod change
    await world.step(NOW + 1)
    assert len(world.core.evictions) == 2
    assert world.rebalancer.evictor.backoff == {}


async def test_a_refusal_takes_back_only_the_move_refused() -> None:
    apps = RefusingApps()
    world = World(apps=apps)
    world.show(wearable())  # a forced Roaming: bypasses the cooldown
    world.deploy("consolidator", "gw-home")
    # An earlier move of the workload, stamped ahead of our clock: counted as made now.
    earlier = MoveRecord(
        f"Deployment/{NS}/consolidator", "patient", "edge-1", "gw-home", Reason.ROAMING, NOW
    )
    world.rebalancer.memory = replace(world.rebalancer.memory, moves=(earlier,))
    world.rebalancer._seeded = True
    await world.step(NOW)
    assert len(apps.patches) == 1  # refused
    assert world.rebalancer.memory.moves == (earlier,)


async def test_a_backoff_not_tried_again_for_long_is_forgotten() -> None:
    world = parked_world()
    await tick(world, NOW)
    assert f"Deployment/{NS}/reader" in world.rebalancer.evictor.backoff
    world.rebalancer.observe_deployment(f"{NS}/reader", None, None)  # deleted
    await world.step(NOW + BACKOFF_FIRST + BACKOFF_MAX)
    assert world.rebalancer.evictor.backoff == {}
