"""The wall clock stepped (NTP, an operator, a VM resumed) during a leader's term.

Within a term, what the rebalancer measured keeps its age across a step: the dwell, the
cooldown and no-return, the rates, a refusal's backoff, the periodic full pass. The
loop reads the wall clock and the monotonic clock on every tick; a disagreement beyond
slewing is a step, and every in-memory stamp moves with it. What is compared with
objects (sightings, Leases, the records on workloads) stays on the wall clock.

Here the whole cluster's clocks step together (gateways too), so sightings stay fresh.
"""

from __future__ import annotations

import pytest

from cloud4iot.policy.store import PolicyStore
from rebalancer.actor import clock_step
from rebalancer.evictor import BACKOFF_FIRST
from tests.rebalancer.test_rebalancer_actor import (
    COOLDOWN,
    NOW,
    POLICY_PATH,
    World,
    loaded_policy,
    wearable,
)
from tests.rebalancer.test_refusal_backoff import RefusingApps

TICK = 1.2  # the run loop's step, about
HOUR = 3600.0


def dwelling_world() -> World:
    """The shipped 10 s dwell."""
    policy = PolicyStore(path=POLICY_PATH, current=loaded_policy(dwell="10s"))
    return World(policy=policy)


async def tick(world: World, wall: float, mono: float, **heard: object) -> None:
    """One tick of the run loop at these readings; gateways stamp on the same wall clock."""
    world.show(wearable(at=wall, **heard))  # type: ignore[arg-type]
    await world.rebalancer.tick(wall, mono)


@pytest.mark.parametrize("step", [-HOUR, -300.0])
async def test_a_step_back_does_not_stretch_the_dwell_of_a_forced_move(step: float) -> None:
    world = dwelling_world()
    world.deploy("consolidator", "gw-home")
    mono = 100.0
    await tick(world, NOW, mono)  # the patient at the hospital: wanted, dwelling
    assert world.apps.patches == []
    assert world.held("dwell") == 1
    for i in range(1, 12):  # the clock steps back after 2.4 s; 13.2 s pass in all
        offset = step if i >= 3 else 0.0
        await tick(world, NOW + i * TICK + offset, mono + i * TICK)
    assert world.moves("Roaming", "rollout", "ok") == 1


async def test_a_step_forward_does_not_release_a_no_return() -> None:
    world = World()
    old = world.deploy("consolidator", "gw-home")
    mono = 100.0
    await tick(world, NOW, mono)  # forced Roaming to the hospital
    assert len(world.apps.patches) == 1
    world.deployment("consolidator", generation=2, observed=2)
    world.delete_pod(old.key)
    world.pod("consolidator-rs2-p1", "gw-hospital", rs="consolidator-rs1")
    back = {"heard": {"gw-home": -50.0, "gw-hospital": -85.0}, "nearest": "gw-home"}
    # The patient walks straight back; 20 s on, the clock steps ten minutes forward.
    elapsed = 20.0
    while elapsed < COOLDOWN - 10:
        wall = NOW + elapsed + (600.0 if elapsed > 30 else 0.0)
        await tick(world, wall, mono + elapsed, since=wall - 5, **back)
        assert len(world.apps.patches) == 1, f"sent back {elapsed:.0f}s after the move"
        elapsed += TICK
    assert world.held("no-return") >= 1
    elapsed = COOLDOWN + 1  # the cooldown is over as the monotonic clock counts it
    wall = NOW + elapsed + 600
    await tick(world, wall, mono + elapsed, since=wall - 60, **back)
    assert len(world.apps.patches) == 2


async def test_a_step_back_does_not_stretch_a_refusal_backoff() -> None:
    apps = RefusingApps()
    apps.status = 422
    world = World(apps=apps)
    world.deploy("consolidator", "gw-home")
    mono = 100.0
    await tick(world, NOW, mono)
    assert len(apps.patches) == 1
    await tick(world, NOW + TICK - HOUR, mono + TICK)  # stepped an hour back
    apps.status = None
    await tick(world, NOW + BACKOFF_FIRST + 1 - HOUR, mono + BACKOFF_FIRST + 1)
    assert len(apps.patches) == 2


async def test_a_step_back_does_not_stop_the_periodic_full_pass() -> None:
    world = World()
    mono = 100.0
    await tick(world, NOW, mono)
    world.rebalancer.dirty.clear()
    plans = world.rebalancer.plans
    world.deploy("anon", "gw-home", function="anonymiser", device=None)  # scores 6 on edge-1
    world.rebalancer.dirty.clear()  # as if the pod's event were missed: only a full pass
    await tick(world, NOW + 61 - HOUR, mono + 61)  # the 60 s interval is over
    assert world.rebalancer.plans == plans + 1


@pytest.mark.parametrize(
    ("before", "after", "step"),
    [
        ((NOW, 100.0), (NOW + 1.2, 101.2), 0.0),
        ((NOW, 100.0), (NOW + 1.2 - HOUR, 101.2), -HOUR),
        ((NOW, 100.0), (NOW + 601.2, 101.2), 600.0),
        ((NOW, 100.0), (NOW + 1.7, 101.2), 0.0),  # within a second: not a step
        ((NOW, 100.0), (NOW + 3600 + 2.0, 100.0 + 3600), 0.0),  # slewing, 500 ppm
        ((NOW, 100.0), (NOW + 3600 + 5.0, 100.0 + 3600), 5.0),
    ],
)
def test_a_step_is_what_the_wall_clock_moved_beyond_the_monotonic_one(
    before: tuple[float, float], after: tuple[float, float], step: float
) -> None:
    assert clock_step(before, after) == pytest.approx(step)


async def test_a_nearest_decision_stamped_ahead_of_our_clock_is_not_held_for_the_skew() -> None:
    """status.nearest.since written before our clock stepped back (or by a writer whose
    clock is ahead): the settle held the Roaming for the whole skew."""
    world = World()  # no dwell
    world.deploy("consolidator", "gw-home")
    world.show(wearable(since=NOW + 300))
    await world.step(NOW)
    assert world.held("settle") == 0
    assert world.moves("Roaming", "rollout", "ok") == 1


@pytest.mark.parametrize("ahead", [0.0, 0.5, 4.0])
async def test_a_fresh_decision_a_little_ahead_of_our_clock_is_still_held_by_settle(
    ahead: float,
) -> None:
    """A writer's clock a little ahead (less than a settle) stamps a decision made now:
    it is held like one of age 0, not taken for one of unknown age and moved at once."""
    world = World()  # no dwell: only the settle holds the move
    world.deploy("consolidator", "gw-home")
    world.show(wearable(since=NOW + ahead))
    await world.step(NOW)
    assert world.held("settle") == 1
    assert world.moves("Roaming", "rollout", "ok") == 0


def test_a_shift_moves_every_in_memory_stamp_of_the_actor_and_the_evictor() -> None:
    """Each record the rebalancer keeps in memory, moved by the step: one left behind
    would be off by the step after it (a backoff, an in-flight eviction, a due time)."""
    from rebalancer.evictor import Backoff

    world = World()
    r, e = world.rebalancer, world.rebalancer.evictor
    r._due = {"ns/p": NOW}
    r._last_full = NOW
    e.evicted, e.pretend, e.repinned = {"u1": NOW}, {"u2": NOW}, {"u3": NOW}
    e.warned = {("Deployment/ns/d", "MoveFailed"): NOW}
    e.evicting = {("ns", "ReplicaSet", "rs"): (NOW, "ns/p", "u1")}
    e.changed = {"ns/d": (3, NOW)}
    e.backoff = {"Deployment/ns/d": Backoff(until=NOW, delay=10.0, status=403)}
    r.shift(-HOUR)
    then = NOW - HOUR
    assert r._due == {"ns/p": then}
    assert r._last_full == then
    assert (e.evicted, e.pretend, e.repinned) == ({"u1": then}, {"u2": then}, {"u3": then})
    assert e.warned == {("Deployment/ns/d", "MoveFailed"): then}
    assert e.evicting == {("ns", "ReplicaSet", "rs"): (then, "ns/p", "u1")}
    assert e.changed == {"ns/d": (3, then)}
    assert e.backoff["Deployment/ns/d"].until == then
