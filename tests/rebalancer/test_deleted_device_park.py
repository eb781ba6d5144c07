"""A function whose Device was deleted (patient discharged, a typo in the annotation) is
away for good: with `whenDeviceAway: park` it is parked deviceAwayAfter after the
planner first saw it so (model.Memory: the park timer of a device with no sighting,
never heard or deleted). The actor dropped the timer of every device not in the
snapshot on every step, so the planner started it afresh each time and never parked.
"""

from __future__ import annotations

from tests.rebalancer.test_rebalancer_actor import AWAY_AFTER, NOW, PARK_CLASS, World, wearable


def parks(world: World) -> list[dict[str, object]]:
    return [b for (_, _, _, b) in world.apps.patches if b.get("spec") == {"replicas": 0}]


async def test_a_function_of_a_deleted_device_is_parked_after_device_away_after() -> None:
    world = World()
    world.show(wearable(heard={"gw-home": -50.0}, nearest="gw-home", since=NOW - 600))
    world.deploy("reader", "gw-home", function=PARK_CLASS)
    await world.step(NOW)
    world.forget_device("patient")  # the admin deletes the Device
    t = NOW + 1
    while t < NOW + 1 + AWAY_AFTER - 2:
        await world.step(t)
        t += 1.2
    assert parks(world) == []  # not yet: away for less than deviceAwayAfter
    assert world.rebalancer.memory.unheard_since == {"patient": NOW + 1}
    while t < NOW + 1 + AWAY_AFTER + 3:
        await world.step(t)
        t += 1.2
    assert len(parks(world)) == 1


async def test_the_timer_of_a_deleted_device_no_pod_serves_is_forgotten() -> None:
    world = World()
    world.show(wearable(heard={"gw-home": -50.0}, nearest="gw-home", since=NOW - 600))
    pod = world.deploy("reader", "gw-home", function=PARK_CLASS)
    await world.step(NOW)
    world.forget_device("patient")
    await world.step(NOW + 1)
    assert "patient" in world.rebalancer.memory.unheard_since
    world.delete_pod(pod.key)  # the function is deleted too
    await world.step(NOW + 2)
    assert world.rebalancer.memory.unheard_since == {}
