"""NearestWriter against recording fakes of CustomObjectsApi / CoreV1Api.

The snapshot plays the Device watch: tests publish what the objects show, so
"our write is not visible yet" and "another leader changed it" are both explicit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio.client.exceptions import ApiException

from cloud4iot.devices import GROUP, PLURAL, VERSION
from cloud4iot.policy.loader import load_policy
from cloud4iot.policy.store import PolicyStore
from cloud4iot.vocabulary import NUDGE_ANNOTATION
from extender.controllers.nearest_plan import RSSI_REFRESH, UNDELIVERED_MAX
from extender.controllers.nearest_writer import FIELD_MANAGER, WRITE_CONCURRENCY, NearestWriter
from extender.state.devices import device_facts
from extender.state.snapshot import DeviceFacts, Snapshot
from extender.state.store import StateStore

POLICY = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"
NOW = 1_800_000_000.0


def api_error(status: int, reason: str, message: str) -> ApiException:
    """Shaped like the client's: its str() carries the headers and the whole body."""
    exc = ApiException(status=status, reason=reason)
    exc.headers = {"Audit-Id": "0f3c", "Content-Type": "application/json"}
    exc.body = (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        f'"message":"{message}","reason":"Invalid","code":{status}}}'
    )
    return exc


@dataclass
class FakeCustom:
    writes: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)
    error: ApiException = field(
        default_factory=lambda: ApiException(status=500, reason="Internal Server Error")
    )
    attempts: list[str] = field(default_factory=list)  # every call, failed or not
    delay: float = 0.0  # seconds each call takes (an apiserver's latency)
    inflight: int = 0
    max_inflight: int = 0

    async def patch_cluster_custom_object_status(
        self, group: str, version: str, plural: str, name: str, body: Any, **kw: Any
    ) -> dict[str, Any]:
        assert (group, version, plural) == (GROUP, VERSION, PLURAL)
        self.attempts.append(name)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.inflight -= 1
        if name in self.failing:
            raise self.error
        if body["status"] == {"nearest": None}:
            # Clearing: a merge patch (an apply of an empty status is refused by the CRD).
            assert kw["_content_type"] == "application/merge-patch+json"
            self.writes.append((name, None))
            return dict(body)
        assert kw["field_manager"] == FIELD_MANAGER
        assert kw["force"] is True
        assert kw["_content_type"] == "application/apply-patch+yaml"
        assert body["metadata"] == {"name": name}
        assert body["status"]["nearest"]["node"]
        self.writes.append((name, body["status"]["nearest"]))
        return dict(body)


@dataclass
class FakeCore:
    nudges: list[str] = field(default_factory=list)

    async def patch_node(self, name: str, body: Any, **kw: Any) -> dict[str, Any]:
        assert kw["_content_type"] == "application/merge-patch+json"
        assert NUDGE_ANNOTATION in body["metadata"]["annotations"]
        self.nudges.append(name)
        return {}


def device(name: str, heard: Mapping[str, tuple[float, float]], nearest: str | None) -> DeviceFacts:
    """A Device whose gateways report node -> (rssi, lastSeen) and whose status shows `nearest`."""
    sightings = [{"node": n, "rssi": r, "lastSeen": t} for n, (r, t) in heard.items()]
    status: dict[str, Any] = {"sightings": sightings}
    if nearest is not None:
        status["nearest"] = {"node": nearest}
    return device_facts({"metadata": {"name": name}, "status": status})


@dataclass
class World:
    store: StateStore = field(default_factory=StateStore)
    custom: FakeCustom = field(default_factory=FakeCustom)
    core: FakeCore = field(default_factory=FakeCore)
    writer: NearestWriter = field(init=False)

    def __post_init__(self) -> None:
        # The writer's mechanics from a device's first sighting on: without the
        # shipped policy's arrivalWait (tests/scoring/test_nearest_decision.py has it).
        loaded = load_policy(POLICY)
        spec = loaded.policy.spec
        spec = spec.model_copy(
            update={"nearest": spec.nearest.model_copy(update={"arrival_wait": 0.0})}
        )
        policy = PolicyStore(
            path=POLICY,
            current=dataclasses.replace(
                loaded, policy=loaded.policy.model_copy(update={"spec": spec})
            ),
        )
        self.writer = NearestWriter(
            custom=self.custom, core=self.core, policy=policy, store=self.store
        )

    def show(self, *devices: DeviceFacts) -> None:
        self.store.snapshot = Snapshot().with_devices({d.name: d for d in devices})

    def nodes_written(self) -> list[str | None]:
        return [n["node"] if n else None for _, n in self.custom.writes]


@pytest.fixture
def world() -> World:
    return World()


async def test_first_sighting_writes_nearest_once_and_nudges_that_node(world: World) -> None:
    heard = {"gw1": (-60.0, NOW), "gw2": (-70.0, NOW)}
    world.show(device("band", heard, nearest=None))
    await world.writer.step(NOW)
    assert world.custom.writes == [
        (
            "band",
            {
                "node": "gw1",
                "since": "2027-01-15T08:00:00Z",
                "rssi": -60,
                "lastSeen": "2027-01-15T08:00:00Z",
            },
        )
    ]
    assert world.core.nudges == ["gw1"]
    await world.writer.step(NOW + 1)  # the watch has not delivered our write yet
    world.show(device("band", heard, nearest="gw1"))  # now it has
    await world.writer.step(NOW + 2)
    assert len(world.custom.writes) == 1
    assert world.core.nudges == ["gw1"]
    assert world.writer.changes == 1


async def test_one_failing_device_does_not_stop_the_others(world: World) -> None:
    world.show(
        device("a", {"gw1": (-60.0, NOW)}, None),
        device("b", {"gw2": (-60.0, NOW)}, None),
        device("c", {"gw3": (-60.0, NOW)}, None),
    )
    world.custom.failing = {"b"}
    await world.writer.step(NOW)
    assert [name for name, _ in world.custom.writes] == ["a", "c"]
    assert world.core.nudges == ["gw1", "gw3"]
    assert world.writer.failures == 1
    world.custom.failing.clear()
    await world.writer.step(NOW + 1)  # b is retried, a and c are not rewritten
    assert [name for name, _ in world.custom.writes] == ["a", "c", "b"]
    assert world.core.nudges == ["gw1", "gw3", "gw2"]


async def test_devices_moving_to_one_gateway_in_a_pass_nudge_it_once(world: World) -> None:
    # A ward's round: five wearables arrive at gw1 and two at gw2 in one pass.
    world.show(
        *(device(f"w{i}", {"gw1": (-60.0, NOW)}, None) for i in range(5)),
        *(device(f"v{i}", {"gw2": (-60.0, NOW)}, None) for i in range(2)),
    )
    await world.writer.step(NOW)
    assert len(world.custom.writes) == 7
    assert world.writer.changes == 7
    assert world.core.nudges == ["gw1", "gw2"]  # after the writes, once per gateway


async def run_term(world: World) -> None:
    """One leadership term: run() until its first step has happened, then lose the lease."""
    changed = asyncio.Event()
    changed.set()  # step at once instead of after a tick
    world.custom.writes.clear()
    world.core.nudges.clear()
    task = asyncio.create_task(world.writer.run(changed))
    await asyncio.sleep(0.1)  # the fakes answer at once; the next tick is 1 s away
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert world.writer.states, "run() did not step"


async def test_new_term_rewrites_what_another_leader_changed(world: World) -> None:
    now = time.time()
    world.show(device("band", {"gw1": (-60.0, now)}, None))
    await run_term(world)
    assert world.nodes_written() == ["gw1"]
    # Meanwhile another leader wrote gw2, whose sighting has since gone stale (> 30 s).
    now = time.time()
    world.show(device("band", {"gw1": (-60.0, now), "gw2": (-50.0, now - 60)}, "gw2"))
    await run_term(world)
    assert world.nodes_written() == ["gw1"]
    assert world.core.nudges == ["gw1"]


async def test_new_term_continues_another_leaders_decision(world: World) -> None:
    now = time.time()
    world.show(device("band", {"gw1": (-60.0, now)}, None))
    await run_term(world)
    # Another leader moved it to gw2, which still hears it well: hysteresis keeps gw2.
    now = time.time()
    world.show(device("band", {"gw1": (-60.0, now), "gw2": (-62.0, now)}, "gw2"))
    await run_term(world)
    assert world.writer.states["band"].node == "gw2"
    assert set(world.nodes_written()) <= {"gw2"}  # at most an rssi refresh, never a move
    assert world.core.nudges == []


async def test_change_behind_our_back_within_a_term_is_rewritten(world: World) -> None:
    heard = {"gw1": (-60.0, NOW)}
    world.show(device("band", heard, None))
    await world.writer.step(NOW)
    world.show(device("band", heard, "gw1"))
    await world.writer.step(NOW + 1)
    world.show(device("band", heard, "gw9"))  # e.g. kubectl edit --subresource status
    await world.writer.step(NOW + 2)
    assert world.nodes_written() == ["gw1", "gw1"]


async def test_our_write_overwritten_before_we_saw_it_is_written_again(world: World) -> None:
    # A previous leader's write lands right after ours, so the watch never shows ours:
    # the object keeps what it showed before. Counted in flight for UNDELIVERED_MAX only.
    world.show(device("band", {"gw1": (-60.0, NOW)}, "gw9"))
    await world.writer.step(NOW)
    for t in (1.0, 5.0, 20.0, UNDELIVERED_MAX, UNDELIVERED_MAX + 1, UNDELIVERED_MAX + 2):
        world.show(device("band", {"gw1": (-60.0, NOW + t)}, "gw9"))
        await world.writer.step(NOW + t)
    assert world.nodes_written() == ["gw1", "gw1"]
    assert world.custom.attempts.count("band") == 2  # (the rewrite is again in flight)


async def test_rssi_rewritten_only_on_a_6_db_change(world: World) -> None:
    def at(rssi: float, t: float) -> DeviceFacts:
        return device("band", {"gw1": (rssi, t)}, "gw1")

    world.show(device("band", {"gw1": (-60.0, NOW)}, None))
    await world.writer.step(NOW)
    # Each reading a refresh interval after the last (at most one rssi write per interval).
    for i, rssi in enumerate([-60.0, -63.0, -65.9, -54.1, -66.0, -62.0, -60.0], start=1):
        world.show(at(rssi, NOW + i * RSSI_REFRESH))
        await world.writer.step(NOW + i * RSSI_REFRESH)
    assert [n["rssi"] if n else None for _, n in world.custom.writes] == [-60, -66, -60]
    assert world.core.nudges == ["gw1"]  # rssi refreshes are not moves
    assert world.writer.changes == 1


async def test_run_stops_when_cancelled_as_a_change_arrives(world: World) -> None:
    changed = asyncio.Event()
    task = asyncio.create_task(world.writer.run(changed))
    try:
        await asyncio.sleep(0.05)  # waiting for a change
        changed.set()
        task.cancel()  # leadership lost at that very moment
        done, _ = await asyncio.wait({task}, timeout=5)  # a swallowed one never ends
        assert task in done, "cancellation was swallowed; the writer would keep writing"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_between_sweeps_only_changed_devices_are_decided_again(world: World) -> None:
    from extender.controllers.nearest_writer import SWEEP

    many = {f"d{i}": device(f"d{i}", {"gw1": (-60.0, NOW)}, "gw1") for i in range(500)}
    world.store.snapshot = Snapshot().with_devices(many)
    await world.writer.step(NOW)  # first step of a term: every device
    assert world.writer.decisions == 500
    await world.writer.step(NOW + 1)  # nothing changed, no challenger pending
    assert world.writer.decisions == 500
    moved = dict(many)
    moved["d7"] = device("d7", {"gw1": (-90.0, NOW + 1), "gw2": (-50.0, NOW + 1)}, "gw1")
    world.store.snapshot = Snapshot().with_devices(moved)
    await world.writer.step(NOW + 2)  # one changed device
    assert world.writer.decisions == 501
    await world.writer.step(NOW + 3)  # d7 has a challenger (gw2): decided on every step
    assert world.writer.decisions == 502
    await world.writer.step(NOW + 2 + SWEEP)  # a sweep: time alone can change decisions
    assert world.writer.decisions == 1002


async def test_a_device_nobody_hears_any_more_has_its_nearest_removed_by_merge_patch(
    world: World,
) -> None:
    world.show(device("band", {"gw1": (-60.0, NOW)}, None))
    await world.writer.step(NOW)
    world.show(device("band", {}, "gw1"))  # gw1 gave its entry up
    await world.writer.step(NOW + 1)
    assert world.nodes_written() == ["gw1", None]
    world.show(device("band", {}, None))  # the removal arrived: nothing more to write
    await world.writer.step(NOW + 2)
    assert world.nodes_written() == ["gw1", None]


async def attempt_times(
    world: World, start: float, seconds: int, *devices: tuple[str, str, float, str | None]
) -> list[float]:
    """Step once a second (the writer's tick) while each (device, gateway, rssi, nearest
    shown) is heard afresh, and note when a write was attempted (seconds from start)."""
    times = []
    for t in range(seconds + 1):
        now = start + t
        world.show(*(device(d, {gw: (rssi, now)}, shown) for d, gw, rssi, shown in devices))
        before = len(world.custom.attempts)
        await world.writer.step(now)
        if len(world.custom.attempts) > before:
            times.append(float(t))
    return times


async def test_failed_writes_back_off_per_device_doubling_to_a_minute(world: World) -> None:
    world.custom.failing = {"band"}
    # ("ok": its one write is shown at once, as the watch would deliver it)
    both = [("band", "gw1", -60.0, None), ("ok", "gw2", -60.0, "gw2")]
    times = await attempt_times(world, NOW, 300, *both)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == [1, 2, 4, 8, 16, 32, 60, 60, 60], times
    assert world.writer.failures == len(times)
    assert world.custom.attempts.count("ok") == 1  # the healthy device is unaffected


async def test_a_success_resets_the_backoff(world: World) -> None:
    band = ("band", "gw1", -60.0, None)
    world.custom.failing = {"band"}
    assert await attempt_times(world, NOW, 20, band) == [0, 1, 3, 7, 15]
    world.custom.failing.clear()
    assert await attempt_times(world, NOW + 21, 15, band) == [10]  # NOW + 31, when due
    assert world.writer.failing == {}
    assert world.custom.writes[-1][0] == "band"
    # Our write has arrived; then the rssi moves 6 dB (a rewrite) and writes fail again:
    # the retries start from 1 s again, not from where the last failures left off.
    world.custom.failing = {"band"}
    later = NOW + 31 + RSSI_REFRESH  # (an rssi rewrite is due at most once per interval)
    assert await attempt_times(world, later, 10, ("band", "gw1", -54.0, "gw1")) == [0, 1, 3, 7]


async def test_a_repeated_failure_is_logged_once_in_one_line(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="extender.controllers.nearest_writer")
    band = ("band", "gw1", -60.0, None)
    world.custom.failing = {"band"}
    world.custom.error = api_error(422, "Unprocessable Entity", "status.nearest: Invalid value")
    await attempt_times(world, NOW, 200, band)
    assert world.writer.failures >= 8

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    [line] = warnings()
    assert "\n" not in line
    assert line.startswith("device band: could not set status.nearest to gw1: HTTP 422")
    assert "Unprocessable Entity: status.nearest: Invalid value" in line
    assert "Audit-Id" not in line  # no headers
    assert '"kind"' not in line  # no raw body
    # Another kind of error is news: one more line, then quiet again.
    world.custom.error = ApiException(status=503, reason="Service Unavailable")
    await attempt_times(world, NOW + 201, 200, band)
    assert len(warnings()) == 2
    assert "HTTP 503 Service Unavailable" in warnings()[1]
    # Recovery is said once too.
    failures = world.writer.failures
    world.custom.failing.clear()
    await attempt_times(world, NOW + 402, 60, band)
    recovered = [r.getMessage() for r in caplog.records if "written after" in r.getMessage()]
    assert recovered == [f"device band: status.nearest written after {failures} failed attempt(s)"]


async def test_a_retry_with_nothing_left_to_write_ends_the_backoff(world: World) -> None:
    world.custom.failing = {"band"}
    assert await attempt_times(world, NOW, 5, ("band", "gw1", -60.0, None)) == [0, 1, 3]
    assert "band" in world.writer.failing
    # Then no gateway hears it any more, and its object shows no nearest: nothing to retry.
    world.show(device("band", {}, None))
    for t in range(6, 9):
        await world.writer.step(NOW + t)
    assert world.custom.attempts.count("band") == 3
    assert world.writer.failing == {}


async def test_many_devices_are_written_with_several_writes_in_flight(world: World) -> None:
    world.custom.delay = 0.05
    bands = [device(f"band-{i:03d}", {"gw1": (-60.0, NOW)}, nearest=None) for i in range(100)]
    world.show(*bands)
    await world.writer.step(NOW)
    assert sorted(name for name, _ in world.custom.writes) == [b.name for b in bands]
    assert world.custom.max_inflight == WRITE_CONCURRENCY  # bounded, and used


async def test_lag_and_failing_writes_are_shown_while_leading_only(world: World) -> None:
    """What /metrics shows for the "nearest decisions lagging" alert: the age of the last
    completed pass and the devices whose write fails, while this replica leads."""
    clock = [NOW]
    world.writer.clock = lambda: clock[0]
    world.show(device("a", {"gw1": (-60.0, NOW)}, None), device("b", {"gw2": (-60.0, NOW)}, None))
    world.custom.failing = {"b"}
    assert (world.writer.lag(), world.writer.failing_writes()) == (0.0, 0)  # not leading
    changed = asyncio.Event()
    changed.set()
    task = asyncio.create_task(world.writer.run(changed))
    try:
        await asyncio.sleep(0.05)  # one pass done
        assert world.writer.failing_writes() == 1
        clock[0] = NOW + 40  # no pass completed for 40 s (the writer's clock)
        assert world.writer.lag() == 40.0
        world.custom.failing.clear()
        clock[0] = NOW + 41
        changed.set()
        await asyncio.sleep(0.05)  # b retried (its backoff is over), the pass completes
        assert world.writer.lag() == 0.0
        assert world.writer.failing_writes() == 0
        world.custom.failing = {"c"}
        world.show(
            device("a", {"gw1": (-60.0, NOW)}, "gw1"),
            device("b", {"gw2": (-60.0, NOW)}, "gw2"),
            device("c", {"gw3": (-60.0, NOW + 41)}, None),
        )
        changed.set()
        await asyncio.sleep(0.05)
        assert world.writer.failing_writes() == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert world.writer.failing  # still kept for the next term, but not shown:
    assert (world.writer.lag(), world.writer.failing_writes()) == (0.0, 0)  # term over


async def test_a_device_whose_decision_raises_does_not_stop_the_others(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The 10,000-node bench's stall: one device's decision raised on every pass, the
    pass failed as a whole, and no Device was decided. Now the others go on, the
    device is shown on /metrics and logged once with its traceback."""
    import extender.controllers.nearest_plan as plan_module

    real = plan_module.decide_nearest
    broken = {"b"}

    def decide(prev: Any, sightings: Any, now: float, spec: Any) -> Any:
        if "gw2" in sightings and broken:
            raise ValueError("max() arg is an empty sequence")
        return real(prev, sightings, now, spec)

    monkeypatch.setattr(plan_module, "decide_nearest", decide)
    world.writer.last_pass = NOW  # leading
    world.show(
        device("a", {"gw1": (-60.0, NOW)}, None),
        device("b", {"gw2": (-60.0, NOW)}, None),
        device("c", {"gw3": (-60.0, NOW)}, None),
    )
    for t in range(3):
        await world.writer.step(NOW + t + 5.0 * t)  # sweeps: every device decided again
    assert [name for name, _ in world.custom.writes] == ["a", "c"]
    assert world.writer.failing_decisions() == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage().startswith("device b: deciding")
    assert errors[0].exc_info is not None  # the traceback, for the bug report
    broken.clear()
    world.show(
        device("a", {"gw1": (-60.0, NOW)}, "gw1"),
        device("b", {"gw2": (-60.0, NOW + 20)}, None),
        device("c", {"gw3": (-60.0, NOW)}, "gw3"),
    )
    await world.writer.step(NOW + 20)
    assert [name for name, _ in world.custom.writes] == ["a", "c", "b"]
    assert world.writer.failing_decisions() == 0
