"""A 429 from the apiserver's own rate limiting (API Priority and Fairness, or the
max-in-flight filter: plain text, a Retry-After) is not a PodDisruptionBudget's.

The eviction subresource names the budget in the Status's causes (DisruptionBudget);
a throttle says nothing of the move. A throttled move is a refusal like any other
(backed off, MoveFailed) and is not tried again before the Retry-After; only a
budget's 429 is reported as MoveBlocked and planned again at once.
"""

from __future__ import annotations

from typing import Any

import pytest

from rebalancer.evictor import BACKOFF_FIRST, budget_refusal
from tests.rebalancer.test_rebalancer_actor import (
    BUDGET_429,
    NOW,
    THROTTLE_429,
    FakeApps,
    World,
    api_error,
    wearable,
)

RETRY_AFTER = 40  # longer than the first backoff: a throttle asking for more is heard


@pytest.mark.parametrize(("status", "body", "expected"), [
    (429, BUDGET_429, True),
    (429, BUDGET_429.encode(), True),
    (429, THROTTLE_429, False),
    (429, None, False),
    (429, '{"kind":"Status","code":429,"details":{"retryAfterSeconds":1}}', False),
    (429, "[1, 2]", False),
    (403, BUDGET_429, False),
])  # fmt: skip
def test_only_a_429_naming_a_disruption_budget_is_a_budget_refusal(
    status: int, body: str | bytes | None, expected: bool
) -> None:
    exc = api_error(status)
    exc.body = body
    assert budget_refusal(exc) is expected


async def test_a_throttled_eviction_is_no_budget_refusal_and_waits_for_retry_after() -> None:
    world = World()
    world.core.evict_status = 429
    world.core.evict_body, world.core.evict_retry_after = THROTTLE_429, RETRY_AFTER
    world.show(wearable())
    pod = world.deploy("consolidator", "gw-home", max_surge=0)
    await world.step(NOW)
    assert len(world.core.evictions) == 1
    assert world.held("disruption-budget") == 0
    assert world.moves("Roaming", "evict", "failed") == 1
    reported = {(e["type"], e["reason"]) for e in world.core.events}
    assert reported == {("Warning", "MoveFailed")}
    assert not [e for e in world.core.events if "DisruptionBudget" in e["message"]]
    # Heartbeats and pod changes re-plan it; the apiserver said: not before 40 s.
    t = NOW + 1.2
    while t < NOW + RETRY_AFTER:
        world.show(wearable(at=t))
        world.pod(pod.name, "gw-home", rs="consolidator-rs1")
        await world.step(t)
        assert len(world.core.evictions) == 1, f"retried at +{t - NOW:.1f}s"
        t += 1.2
    world.core.evict_status = None
    await world.step(NOW + RETRY_AFTER)  # due then
    assert len(world.core.evictions) == 2
    assert world.moves("Roaming", "evict", "ok") == 1


class ThrottledApps(FakeApps):
    """Deployment PATCHes rejected by API Priority and Fairness."""

    async def patch_namespaced_deployment(
        self, name: str, namespace: str, body: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        self.patches.append(("Deployment", namespace, name, body))
        raise api_error(429, THROTTLE_429, RETRY_AFTER)


async def test_a_throttled_rollout_is_not_tried_again_before_retry_after() -> None:
    world = World(apps=ThrottledApps())
    world.show(wearable())
    world.deploy("consolidator", "gw-home")
    await world.step(NOW)
    assert len(world.apps.patches) == 1
    for t in (BACKOFF_FIRST, BACKOFF_FIRST + 1.2, RETRY_AFTER - 1.0):
        world.show(wearable(at=NOW + t))
        await world.step(NOW + t)
    assert len(world.apps.patches) == 1
    world.show(wearable(at=NOW + RETRY_AFTER))
    await world.step(NOW + RETRY_AFTER)
    assert len(world.apps.patches) == 2
