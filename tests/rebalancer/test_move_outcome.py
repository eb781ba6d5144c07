"""What an error answer to a move means for the record of moves.

A 4xx is a refusal: the move did not happen, so it does not count against cooldowns,
no-return and rates. A 5xx (504 "request did not complete within the allotted
timeout", 500 "etcdserver: request timed out", a webhook's 503) may come after the
write committed: the move stays recorded and in flight, as when no answer comes,
so a function that did move is not sent straight back.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.aio.client.exceptions import ApiException

from rebalancer.evictor import refused
from rebalancer.workloads import PodRecord
from tests.rebalancer.answered_evictions import an_eviction_answered
from tests.rebalancer.test_rebalancer_actor import COOLDOWN, NOW, NS, FakeApps, World, wearable

WORKLOAD = f"Deployment/{NS}/consolidator"


class AnswersOnce(FakeApps):
    """The first Deployment PATCH commits, and then answers `status` (None: 200)."""

    status: int | None = None

    async def patch_namespaced_deployment(
        self, name: str, namespace: str, body: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        self.patches.append(("Deployment", namespace, name, body))
        if self.status is not None and len(self.patches) == 1:
            raise ApiException(status=self.status, reason="Timeout")
        return {}


async def a_rollout_answered(status: int | None) -> tuple[World, AnswersOnce, PodRecord]:
    """The patient at the hospital (a forced Roaming) and its consolidator on gw-home,
    moved by a rollout: one step, the PATCH committed and answered ``status`` (None:
    200). The world, its apps API and the pod on gw-home."""
    apps = AnswersOnce()
    apps.status = status
    world = World(apps=apps)
    world.show(wearable())
    pod = world.deploy("consolidator", "gw-home")
    await world.step(NOW)
    return world, apps, pod


@pytest.mark.parametrize(("status", "expected"), [
    (400, True), (403, True), (404, True), (409, True), (422, True), (429, True),
    (408, False), (500, False), (503, False), (504, False), (None, False),
])  # fmt: skip
def test_only_a_4xx_says_the_move_did_not_happen(status: int | None, expected: bool) -> None:
    assert refused(status) is expected


@pytest.mark.parametrize("status", [500, 503, 504])
async def test_a_rollout_answered_5xx_stays_recorded_and_in_flight(status: int) -> None:
    world, apps, _ = await a_rollout_answered(status)
    assert world.moves("Roaming", "rollout", "unknown") == 1
    assert world.moves("Roaming", "rollout", "failed") == 0
    assert [r.workload for r in world.rebalancer.memory.moves] == [WORKLOAD]
    world.show(wearable(at=NOW + 5))
    await world.step(NOW + 5)  # in flight: not made again
    assert len(apps.patches) == 1


@pytest.mark.parametrize("status", [400, 403, 409, 422])
async def test_a_rollout_refused_with_a_4xx_is_not_counted(status: int) -> None:
    world, _, _ = await a_rollout_answered(status)
    assert world.moves("Roaming", "rollout", "failed") == 1
    assert world.rebalancer.memory.moves == ()


async def test_an_eviction_answered_503_leaves_the_pod_leaving() -> None:
    world, pod = await an_eviction_answered(503)
    assert world.moves("Roaming", "evict", "unknown") == 1
    assert [r.workload for r in world.rebalancer.memory.moves] == [WORKLOAD]
    assert pod.uid in world.rebalancer.evictor.evicted
    world.show(wearable(at=NOW + 2))
    await world.step(NOW + 2)
    assert len(world.core.evictions) == 1
    assert not [e for e in world.core.events if e["type"] == "Warning"]


@pytest.mark.parametrize("status", [None, 504, 500])
async def test_a_committed_rollout_keeps_its_no_return_whatever_the_answer(
    status: int | None,
) -> None:
    world, apps, old = await a_rollout_answered(status)  # the patient walked to the hospital
    assert len(apps.patches) == 1  # the Roaming rollout
    # It happened: the watch shows generation 2 and the new pod at the hospital.
    world.deployment("consolidator", generation=2, observed=2)
    world.delete_pod(old.key)
    world.pod("consolidator-rs2-p1", "gw-hospital", rs="consolidator-rs1")
    # The patient walks straight back home (a corridor): a forced Roaming back.
    t = NOW + 20
    while t < NOW + COOLDOWN - 10:
        heard = {"gw-home": -50.0, "gw-hospital": -85.0}
        world.show(wearable(heard=heard, nearest="gw-home", since=NOW + 15, at=t))
        await world.step(t)
        assert len(apps.patches) == 1, f"answer {status}: back to gw-home at +{t - NOW:.0f}s"
        t += 1.2
    assert world.held("no-return") >= 1
