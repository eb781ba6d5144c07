"""A rollout is a move only when it is make-before-break.

The Deployment controller may scale the old ReplicaSet down while at least
replicas - maxUnavailable pods are available (maxUnavailable rounded down, maxSurge
up, as GetScaledValueFromIntOrPercent does). With maxUnavailable resolving above 0 a
"rollout" of a single replica may delete it before its replacement is Ready, and no
PodDisruptionBudget is consulted: such a Deployment is moved by the Eviction API.
"""

from __future__ import annotations

from typing import Any

import pytest

from rebalancer.workloads import DeploymentRecord, make_before_break
from tests.rebalancer.test_rebalancer_actor import NOW, World, wearable


def deployment(replicas: int, strategy: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "template": {"metadata": {"annotations": {"cloud4iot.io/function": "mhealth"}}},
    }
    if strategy is not None:
        spec["strategy"] = strategy
    return {
        "metadata": {"name": "consolidator", "namespace": "health", "generation": 1},
        "spec": spec,
        "status": {"observedGeneration": 1},
    }


def rolling(**fields: Any) -> dict[str, Any]:
    return {"type": "RollingUpdate", "rollingUpdate": fields}


@pytest.mark.parametrize(
    ("replicas", "strategy", "can_surge"),
    [
        (1, rolling(maxSurge=1, maxUnavailable=0), True),
        (1, rolling(maxSurge=1, maxUnavailable=1), False),
        (1, rolling(maxSurge="25%", maxUnavailable="100%"), False),
        (1, rolling(maxSurge=1, maxUnavailable="50%"), True),  # 0.5 rounds down to 0
        (2, rolling(maxSurge=1, maxUnavailable="50%"), False),  # 1
        (1, None, True),  # the defaults, 25 % each: surge 1, unavailable 0
        (1, rolling(), True),
        (3, rolling(), True),  # unavailable 0.75 -> 0
        (4, rolling(), False),  # unavailable 1
        (0, rolling(), True),  # parked: judged as for one replica
        (1, rolling(maxSurge="1%", maxUnavailable=0), True),  # surge rounds up
        (1, rolling(maxSurge=0, maxUnavailable=1), False),
        (1, rolling(maxSurge=1, maxUnavailable="garbage%"), False),  # unknown: no rollout
        (1, rolling(maxSurge=1, maxUnavailable="1.5%"), False),
        (1, rolling(maxSurge=1, maxUnavailable="0"), False),  # not a percentage
        (1, {"type": "Recreate"}, False),
    ],
)
def test_can_surge_only_when_no_pod_may_go_first(
    replicas: int, strategy: dict[str, Any] | None, can_surge: bool
) -> None:
    record = DeploymentRecord.from_deployment(deployment(replicas, strategy))
    assert record.can_surge is can_surge
    if strategy is not None:
        assert make_before_break(strategy, max(replicas, 1)) is can_surge


@pytest.mark.parametrize("max_unavailable", [1, "100%"])
async def test_a_single_replica_that_may_break_first_is_evicted_not_rolled_out(
    max_unavailable: Any,
) -> None:
    world = World()
    world.show(wearable())  # the patient walked to gw-hospital: a forced Roaming move
    pod = world.deploy("consolidator", "gw-home", max_surge=1, max_unavailable=max_unavailable)
    await world.step(NOW)
    # The Eviction API (disruption budgets hold), and only the move's record patched.
    assert [(ns, name) for ns, name, _ in world.core.evictions] == [("health", pod.name)]
    ((_, _, _, patch),) = world.apps.patches
    assert set(patch) == {"metadata"}
    assert world.moves("Roaming", "evict", "ok") == 1


async def test_a_make_before_break_deployment_is_rolled_out() -> None:
    world = World()
    world.show(wearable())
    world.deploy("consolidator", "gw-home", max_surge=1, max_unavailable=0)
    await world.step(NOW)
    assert world.core.evictions == []
    assert world.moves("Roaming", "rollout", "ok") == 1


async def test_a_paused_deployment_is_evicted_not_rolled_out() -> None:
    """A paused Deployment takes no rollout: the controller makes no new ReplicaSet for
    the changed template (updatedReplicas stays 0), so a rollout would move nothing and
    leave the workload unsettled, every later move held, until someone resumes it.
    Its ReplicaSet still replaces an evicted pod, placed by the scheduler."""
    world = World()
    world.show(wearable())  # the patient walked to gw-hospital: a forced Roaming move
    pod = world.deploy("consolidator", "gw-home", paused=True)
    assert world.rebalancer.workloads.deployments["health/consolidator"].paused
    await world.step(NOW)
    template_changes = [b for *_, b in world.apps.patches if "spec" in b]
    assert template_changes == []
    assert [(ns, name) for ns, name, _ in world.core.evictions] == [("health", pod.name)]
    assert world.moves("Roaming", "evict", "ok") == 1
    assert world.moves("Roaming", "rollout", "ok") == 0


def test_a_paused_deployment_cannot_surge() -> None:
    paused = deployment(1, rolling(maxSurge=1, maxUnavailable=0))
    paused["spec"]["paused"] = True
    record = DeploymentRecord.from_deployment(paused)
    assert record.paused
    assert not record.can_surge
