"""The rebalancer recreates pending pods whose admission-narrowing pin went stale.

Same fakes as test_rebalancer_actor: the pod records are built from pod JSON the way
the reflector builds them, so the pin is read from the affinity the webhook wrote.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest

from cloud4iot.vocabulary import NARROWED_ANNOTATION
from extender.admission.narrow import Narrowed, affinity_patch
from extender.state.pods import pinned_nodes
from extender.state.snapshot import LoadSample
from rebalancer.model import Reason
from rebalancer.workloads import PodRecord
from tests.rebalancer.test_rebalancer_actor import (
    NOW,
    FakeCore,
    World,
    loaded_policy,
    pod_obj,
    wearable,
)

REPINNED = Reason.REPINNED
CREATED = "2027-01-15T08:00:00Z"  # epoch 1_800_000_000 is 2027-01-15T08:00:00Z


@dataclass
class DeletingCore(FakeCore):
    """Evictions of pending pods, as (namespace, name, the Eviction's deleteOptions)."""

    @property
    def deletions(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(ns, name, body.get("deleteOptions", {})) for ns, name, body in self.evictions]


def apply_adds(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 `add` (all affinity_patch emits), on a copy."""
    out = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] == "add"
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target = out
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target.append(op["value"]) if parts[-1] == "-" else target.insert(
                int(parts[-1]), op["value"]
            )
        else:
            target[parts[-1]] = op["value"]
    return out


def pinned_pod(
    name: str, pins: tuple[str, ...], rs: str | None = "wearable-rs1", created: str = CREATED
) -> dict[str, Any]:
    """A pending pod of the mhealth class, pinned as the webhook pins it."""
    obj = pod_obj(name, None, "mhealth-consolidator", "patient", rs)
    obj["status"] = {"phase": "Pending"}
    obj["metadata"]["creationTimestamp"] = created
    pinned = apply_adds(obj, affinity_patch(obj, Narrowed(pins, len(pins))))
    assert pinned_nodes(pinned) == pins
    return pinned


def world_with(core: DeletingCore, dry_run: bool = False) -> World:
    return World(core=core, dry_run=dry_run)


def add(world: World, obj: dict[str, Any]) -> PodRecord:
    record = PodRecord.from_pod(obj)
    world.rebalancer.observe_pod(record.key, world.pods.get(record.key), record)
    world.pods[record.key] = record
    return record


@pytest.fixture
def core() -> DeletingCore:
    return DeletingCore()


def test_the_record_reads_the_pin_only_from_narrowed_pods() -> None:
    obj = pinned_pod("p", ("gw-home", "edge-1"))
    assert PodRecord.from_pod(obj).pins == ("gw-home", "edge-1")
    del obj["metadata"]["annotations"][NARROWED_ANNOTATION]
    # A name pin the webhook did not write (a user's, a DaemonSet's) is not ours to renew.
    assert PodRecord.from_pod(obj).pins == ()


async def test_a_pending_pod_pinned_to_a_gateway_that_no_longer_hears_its_device_is_recreated(
    core: DeletingCore,
) -> None:
    world = world_with(core)
    # The wearable is at the hospital now (the default device); the pod was pinned
    # to gw-home when it was created, and the scheduler cannot place it there.
    world.show(wearable())
    record = add(world, pinned_pod("wearable-rs1-a", ("gw-home",)))
    await world.step(NOW + 30)
    assert core.deletions == [
        (record.namespace, record.name, {"preconditions": {"uid": record.uid}})
    ]
    assert world.moves(REPINNED, "recreate", "ok") == 1
    (event,) = core.events
    assert event["reason"] == REPINNED
    assert "gw-home" not in event["message"]
    assert "none of the 1 node(s)" in event["message"]
    # Not twice: the watch has not shown it gone yet.
    await world.step(NOW + 40)
    assert len(core.deletions) == 1


async def test_a_recreated_pod_the_watch_shows_gone_is_forgotten(core: DeletingCore) -> None:
    world = world_with(core)
    world.show(wearable())
    record = add(world, pinned_pod("wearable-rs1-a", ("gw-home",)))
    await world.step(NOW + 30)
    assert len(core.deletions) == 1
    assert record.uid in world.rebalancer.evictor.repinned  # not deleted twice meanwhile
    world.delete_pod(record.key)
    await world.step(NOW + 31)
    assert record.uid not in world.rebalancer.evictor.repinned  # uids never come back: no leak
    assert len(core.deletions) == 1


async def test_a_recreate_in_flight_is_not_planned_again_on_a_full_pass(
    core: DeletingCore,
) -> None:
    world = world_with(core)
    world.show(wearable())
    add(world, pinned_pod("wearable-rs1-a", ("gw-home",)))
    await world.step(NOW + 30)
    assert len(core.deletions) == 1
    world.rebalancer.full_pass = True  # every pod planned again; the watch still shows it
    await world.step(NOW + 31)
    assert len(core.deletions) == 1


async def test_a_pin_that_still_holds_a_feasible_node_is_left_alone(core: DeletingCore) -> None:
    world = world_with(core)
    world.show(wearable())
    add(world, pinned_pod("wearable-rs1-a", ("gw-home", "gw-hospital")))
    await world.step(NOW + 30)
    assert core.deletions == []


async def test_a_young_pod_gets_the_dwell_before_its_pin_is_judged(core: DeletingCore) -> None:
    world = World(core=core)
    world.policy.current = loaded_policy(dwell="20s")
    world.show(wearable())
    add(world, pinned_pod("wearable-rs1-a", ("gw-home",)))
    await world.step(NOW + 5)
    assert core.deletions == []
    await world.step(NOW + 21)
    assert len(core.deletions) == 1


async def test_a_bare_pod_is_never_deleted(core: DeletingCore) -> None:
    world = world_with(core)
    world.show(wearable())
    add(world, pinned_pod("bare", ("gw-home",), rs=None))  # stale, but nobody would recreate it
    await world.step(NOW + 30)
    assert core.deletions == []


async def test_a_pod_nothing_is_feasible_for_keeps_its_pin(core: DeletingCore) -> None:
    world = world_with(core)
    # The wearable at the hospital, whose gateway and the edge are overloaded: no
    # node is feasible for the confidential pod (the cloud is not allowed), so a
    # new pin would not help it.
    world.show(wearable())
    world.set_load(
        {
            n: LoadSample(cpu=0.99, memory=0.3, at=NOW + 30)
            for n in ("gw-home", "gw-hospital", "edge-1", "cloud-1")
        },
        at=NOW + 30,
    )
    add(world, pinned_pod("wearable-rs1-a", ("gw-home",)))
    await world.step(NOW + 30)
    assert core.deletions == []


async def test_dry_run_only_tells(core: DeletingCore) -> None:
    world = world_with(core, dry_run=True)
    world.show(wearable())
    add(world, pinned_pod("wearable-rs1-a", ("gw-home",)))
    await world.step(NOW + 30)
    assert core.deletions == []
    assert world.moves(REPINNED, "recreate", "dry-run") == 1
    assert core.events[0]["message"].startswith("dry-run: would recreate")


@pytest.mark.parametrize("status", [404, 409])
async def test_a_pod_gone_or_replaced_meanwhile_is_not_an_error(
    core: DeletingCore, status: int
) -> None:
    core.evict_status = status
    world = world_with(core)
    world.show(wearable())
    add(world, pinned_pod("wearable-rs1-a", ("gw-home",)))
    await world.step(NOW + 30)
    assert len(core.deletions) == 1
    assert world.moves(REPINNED, "recreate", "ok") == 0
    assert world.moves(REPINNED, "recreate", "failed") == 0
