"""When a sighting is published: arrival, departure, step, heartbeat, never too often."""

from __future__ import annotations

import itertools
import random

import pytest

from bench import synthetic_traces
from gateway_monitor.publisher import PublishConfig, PublishPlan, Reason, Sighting
from gateway_monitor.report import report_body
from gateway_monitor.tracker import Tracker

CFG = PublishConfig(min_interval=2.0, step=3, heartbeat=30.0, adopt_grace=30.0)


def drain(plan: PublishPlan, now: float) -> list[tuple[str, Reason]]:
    due = plan.due(now)
    for device, _ in due:
        plan.sent(device, plan.entries[device].desired, now)
    return due


def test_arrival_step_heartbeat_and_departure() -> None:
    plan = PublishPlan(CFG)
    plan.want("d", Sighting(-60, 0.0))
    assert drain(plan, 0.0) == [("d", Reason.ARRIVAL)]
    plan.want("d", Sighting(-62, 1.0))  # 2 dB: not worth a publish
    assert drain(plan, 5.0) == []
    plan.want("d", Sighting(-64, 6.0))  # 4 dB from what was published
    assert drain(plan, 6.0) == [("d", Reason.STEP)]
    assert drain(plan, 35.0) == []
    assert drain(plan, 36.0) == [("d", Reason.HEARTBEAT)]
    plan.want("d", None)
    assert drain(plan, 36.5) == []  # rate limit holds the departure back ...
    assert plan.next_wakeup(36.5) == 38.0  # ... until the interval has passed
    assert drain(plan, 38.0) == [("d", Reason.DEPARTURE)]
    assert "d" not in plan.entries  # removed entry: nothing left to track


def test_rate_limit_coalesces_to_the_latest_state() -> None:
    plan = PublishPlan(CFG)
    plan.want("d", Sighting(-60, 0.0))
    drain(plan, 0.0)
    for i, rssi in enumerate([-70, -50, -80, -65]):
        plan.want("d", Sighting(rssi, 0.1 * i))
        assert drain(plan, 0.1 * i + 0.1) == []
    assert drain(plan, 2.0) == [("d", Reason.STEP)]
    published = plan.entries["d"].published
    assert published is not None
    assert published.rssi == -65


def test_boundary_oscillation_publishes_boundedly() -> None:
    """A device pacing across the band for 20 minutes: applies stay under the rate cap."""
    tracker, plan = Tracker(), PublishPlan(CFG)
    records = synthetic_traces.oscillating("C0:FF:EE:00:00:01", -80.0, 10.0, 60.0, duration=1200.0)
    sent: list[tuple[float, Reason]] = []
    t = 0.0
    for rec in records:
        t = rec.t
        for u in [*tracker.tick(t), tracker.observe("d", rec.rssi, t)]:
            plan.want("d", Sighting(u.state.rssi, t) if u.state.present and u.state.rssi else None)
        sent += [(t, why) for _, why in drain(plan, t)]
    times = [s for s, _ in sent]
    assert all(b - a >= CFG.min_interval for a, b in itertools.pairwise(times))
    # present only part of each swing, and steps of 3 dB: far fewer than one per advert
    assert len(sent) < len(records) / 4
    kinds = [w for _, w in sent]
    assert kinds.count(Reason.DEPARTURE) >= 1
    assert kinds.count(Reason.ARRIVAL) - kinds.count(Reason.DEPARTURE) in (0, 1)


def test_adopted_entry_is_kept_through_the_grace_then_removed() -> None:
    plan = PublishPlan(CFG)
    plan.adopt("d", Sighting(-70, 0.0), now=100.0)
    assert drain(plan, 110.0) == []
    assert drain(plan, 130.0) == [("d", Reason.DEPARTURE)]
    # heard again within the grace: no removal, a normal publish instead
    plan.adopt("e", Sighting(-70, 0.0), now=100.0)
    plan.want("e", Sighting(-60, 101.0))
    assert drain(plan, 101.0) == [("e", Reason.STEP)]


def test_failure_backs_off_and_keeps_the_wanted_state() -> None:
    plan = PublishPlan(CFG)
    plan.want("d", Sighting(-60, 0.0))
    plan.failed("d", now=0.0, delay=5.0)
    plan.want("d", Sighting(-61, 1.0))
    assert plan.due(4.0) == []
    assert plan.due(5.0) == [("d", Reason.ARRIVAL)]
    assert plan.entries["d"].desired == Sighting(-61, 1.0)


def test_a_failed_apply_that_may_have_landed_is_taken_back_on_departure() -> None:
    plan = PublishPlan(CFG)
    plan.want("d", Sighting(-60, 0.0))
    plan.failed("d", now=0.0, delay=1.0, attempted=True)  # timeout: stored or not?
    plan.want("d", None)
    assert drain(plan, 1.0) == [("d", Reason.DEPARTURE)]
    assert "d" not in plan.entries


def test_a_departure_of_a_never_published_device_sends_nothing() -> None:
    plan = PublishPlan(CFG)
    plan.want("d", Sighting(-60, 0.0))
    plan.failed("d", now=0.0, delay=1.0)  # rejected: nothing stored
    plan.want("d", None)
    assert drain(plan, 5.0) == []
    assert plan.entries == {}


def test_report_body_is_our_report_with_every_device_we_hear() -> None:
    body = report_body("gw1", {"patient-2": (-70, 1.0), "patient-1": (-61, 0.0)}, 2.0)
    assert body["kind"] == "GatewayReport"
    assert body["metadata"] == {"name": "gw1"}
    assert body["status"] == {
        "observedAt": "1970-01-01T00:00:02Z",
        "heard": 2,
        "sightings": [
            {"device": "patient-1", "rssi": -61, "lastSeen": "1970-01-01T00:00:00Z"},
            {"device": "patient-2", "rssi": -70, "lastSeen": "1970-01-01T00:00:01Z"},
        ],
    }
    assert "spec" not in body
    assert report_body("gw1", {}, 0.0)["status"]["sightings"] == []


def test_the_report_lists_what_we_hear_and_adopted_entries_through_their_grace() -> None:
    plan = PublishPlan(CFG)
    plan.want("heard", Sighting(-60, 0.0))
    plan.adopt("old", Sighting(-70, 0.0), now=0.0)
    assert set(plan.report(1.0)) == {"heard", "old"}
    assert set(plan.report(CFG.adopt_grace + 1)) == {"heard"}
    plan.sent_report(plan.report(1.0), 1.0)
    assert plan.entries["heard"].published == Sighting(-60, 0.0)
    assert plan.entries["old"].adopted_until == CFG.adopt_grace  # the grace runs on
    plan.want("heard", None)
    plan.sent_report(plan.report(2.0), 2.0)
    assert "heard" not in plan.entries


def _scan_due(plan: PublishPlan, now: float) -> list[tuple[str, Reason]]:
    """The definition the plan's index must agree with: every entry's reason and limit."""
    out = []
    for device in plan.entries:
        why = plan.reason(device, now)
        if why is not None and plan.earliest(device) <= now:
            out.append((device, why))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_indexed_due_agrees_with_a_scan_of_every_entry(seed: int) -> None:
    rng = random.Random(seed)
    plan = PublishPlan(CFG)
    devices = [f"d{i}" for i in range(6)]
    now = 0.0
    for _ in range(600):
        now += rng.choice([0.0, 0.01, 0.1, 0.5, 1.7, 2.0, 7.3, 30.0])
        d = rng.choice(devices)
        op = rng.random()
        if op < 0.45:
            plan.want(d, Sighting(rng.randint(-90, -40), now))
        elif op < 0.55:
            plan.want(d, None)
        elif op < 0.6:
            plan.adopt(d, Sighting(-60, now), now)
        elif op < 0.65:
            plan.forget(d)
        elif op < 0.7 and d in plan.entries:
            plan.failed(d, now, rng.choice([0.5, 4.0]), attempted=rng.random() < 0.5)
        else:
            for device, _why in plan.due(now):
                plan.sent(device, plan.entries[device].desired, now)
        for probe in (now, now + 0.99, now + 2.0, now + 10.0, now + 31.0):
            assert plan.due(probe) == _scan_due(plan, probe)
        wake = plan.next_wakeup(now)
        if wake is not None:  # nothing becomes due before the wake-up
            assert _scan_due(plan, now) or not _scan_due(plan, wake - 1e-6)


# --- With our Lease renewed (docs/gateway-writes.md 2): written on change only ---------


def write(plan: PublishPlan, now: float) -> list[tuple[str, Reason]]:
    """What a Publisher write at `now` sends: one report carrying every device."""
    due = plan.due(now)
    if due:
        plan.sent_report(plan.report(now), now)
    return due


def test_with_coalescing_noise_waits_for_the_gateways_next_write_and_a_walk_does_not() -> None:
    # coalesce is off by default (the next test); a sparse site may turn it on.
    cfg = PublishConfig(
        min_interval=1.0, step=2, heartbeat=10.0, lease_heartbeat=300.0, coalesce=10.0
    )
    plan = PublishPlan(cfg)
    plan.set_live(True)
    for d in ("a", "b"):
        plan.want(d, Sighting(-60, 0.0))
    assert sorted(write(plan, 0.0)) == [("a", Reason.ARRIVAL), ("b", Reason.ARRIVAL)]
    # small steps (noise) of both devices: nothing until 10 s after the last write,
    # then one write carries both
    plan.want("a", Sighting(-63, 1.0))
    plan.want("b", Sighting(-57, 2.0))
    assert plan.due(9.99) == []
    assert plan.next_wakeup(3.0) == 10.0
    assert sorted(write(plan, 10.0)) == [("a", Reason.STEP), ("b", Reason.STEP)]
    # an urgent step (6 dB: walking) goes out as soon as report_interval (2 s) allows
    plan.want("a", Sighting(-69, 11.5))
    assert plan.due(11.99) == []
    assert write(plan, 12.0) == [("a", Reason.STEP)]
    # at rest nothing is due for the lease heartbeat (5 min), then one refresh
    assert plan.due(12.0 + 299) == []
    assert sorted(write(plan, 312.0)) == [("a", Reason.HEARTBEAT), ("b", Reason.HEARTBEAT)]


def test_by_default_a_small_step_goes_out_as_soon_as_report_interval_allows() -> None:
    """A 2-5 dB step is not held for the gateway's next write (coalesce 0 s): a walk's
    approaching gateway held up to 10 s cost the nearest decision more than it saved
    (BENCHMARKS.md, "The nearest decision on the Lease path"); report_interval still
    bounds the gateway's writes (the 150-entry test below)."""
    plan = PublishPlan()
    plan.set_live(True)
    plan.want("a", Sighting(-60, 0.0))
    assert write(plan, 0.0) == [("a", Reason.ARRIVAL)]
    plan.want("a", Sighting(-63, 0.5))  # 3 dB: below urgent_step
    assert plan.due(1.99) == []  # report_interval (2 s) after the last write ...
    assert plan.next_wakeup(0.5) == 2.0
    assert write(plan, 2.0) == [("a", Reason.STEP)]  # ... then at once
    plan.want("a", Sighting(-62, 2.5))  # 1 dB: below step, never alone
    assert plan.next_wakeup(2.5) == 2.0 + plan.config.lease_heartbeat


def test_with_a_live_lease_report_writes_are_report_interval_apart_whatever_is_due() -> None:
    """Arrivals, departures and urgent steps of many devices: one write per 2 s at most
    (issue 23 item 2: ~150 noisy entries per gateway made one nearly every second)."""
    plan = PublishPlan(PublishConfig(min_interval=1.0, report_interval=2.0))
    plan.set_live(True)
    plan.want("a", Sighting(-60, 0.0))
    assert write(plan, 0.0) == [("a", Reason.ARRIVAL)]
    plan.want("b", Sighting(-60, 0.5))  # an arrival
    plan.want("a", Sighting(-75, 0.5))  # an urgent step
    assert plan.due(1.5) == []
    assert plan.next_wakeup(0.5) == 2.0
    assert sorted(write(plan, 2.0)) == [("a", Reason.STEP), ("b", Reason.ARRIVAL)]
    plan.want("b", None)  # a departure waits too
    assert plan.due(3.9) == []
    assert write(plan, 4.0) == [("b", Reason.DEPARTURE)]
    # Without a live Lease (readers age entries on lastSeen): only min_interval per device.
    plan.set_live(False)
    plan.want("a", Sighting(-60, 4.5))  # written with the departure at 4.0
    assert write(plan, 5.0) == [("a", Reason.STEP)]  # min_interval, not report_interval


def test_noise_of_150_entries_at_rest_is_at_most_30_writes_a_minute() -> None:
    """One gateway hearing 150 stationary wearables (4 dB noise, 10 % loss, one advert a
    second each) through the real tracker: the report is written at most every
    report_interval; without the bound nearly every second."""

    def writes_per_minute(cfg: PublishConfig) -> float:
        rng = random.Random(4)
        tracker, plan = Tracker(), PublishPlan(cfg)
        plan.set_live(True)
        means = [rng.uniform(-74.0, -50.0) for _ in range(150)]
        writes, seconds = 0, 300
        for tick in range(seconds * 10):
            now = tick / 10
            for i in range(tick % 10, 150, 10):
                if rng.random() < 0.1:
                    continue
                state = tracker.observe(str(i), round(means[i] + rng.gauss(0, 4)), now).state
                if state.present and state.rssi is not None:
                    plan.want(str(i), Sighting(state.rssi, now))
            if plan.due(now):
                plan.sent_report(plan.report(now), now)
                writes += 1
        return writes / (seconds / 60)

    assert writes_per_minute(PublishConfig()) <= 30.5
    assert writes_per_minute(PublishConfig(report_interval=0.0)) > 45


def test_without_a_live_lease_every_step_and_the_10s_heartbeat_as_before() -> None:
    cfg = PublishConfig(min_interval=1.0, step=2, heartbeat=10.0, lease_heartbeat=300.0)
    plan = PublishPlan(cfg)
    plan.set_live(True)
    plan.want("a", Sighting(-60, 0.0))
    write(plan, 0.0)
    plan.set_live(False)  # our Lease lapsed: readers age entries on lastSeen again
    plan.want("a", Sighting(-62, 1.0))
    assert write(plan, 1.0) == [("a", Reason.STEP)]
    assert plan.due(10.9) == []
    assert write(plan, 11.0) == [("a", Reason.HEARTBEAT)]


def test_an_adopted_entrys_departure_also_waits_for_report_interval() -> None:
    """An entry adopted at start-up and not heard again is removed when its grace ends,
    but not sooner than report_interval after the gateway's last write."""
    plan = PublishPlan(PublishConfig(min_interval=1.0, report_interval=2.0, adopt_grace=30.0))
    plan.set_live(True)
    plan.adopt("x", Sighting(-60, 0.0), 0.0)
    plan.want("a", Sighting(-60, 0.0))
    assert write(plan, 0.0) == [("a", Reason.ARRIVAL)]  # x listed through its grace
    plan.want("b", Sighting(-60, 29.5))
    assert write(plan, 29.5) == [("b", Reason.ARRIVAL)]
    assert plan.due(30.0) == []  # x's grace is over, the gateway wrote 0.5 s ago
    assert write(plan, 31.5) == [("x", Reason.DEPARTURE)]


def test_a_change_while_the_write_is_in_flight_is_still_sent() -> None:
    """The server holds what the write listed, not what we want by the time it returns:
    a step, an arrival and a departure that came meanwhile are all due after it."""
    plan = PublishPlan(PublishConfig())
    plan.set_live(True)
    plan.want("walker", Sighting(-80, 0.0))
    plan.want("leaving", Sighting(-60, 0.0))
    listed = plan.report(0.0)  # the write goes out with these ...
    plan.want("walker", Sighting(-55, 0.5))  # ... while the walker comes 25 dB closer,
    plan.want("newcomer", Sighting(-60, 0.5))  # another device arrives
    plan.want("leaving", None)  # and one is no longer heard
    plan.sent_report(listed, 1.0)
    assert plan.entries["walker"].published == Sighting(-80, 0.0)
    due = dict(plan.due(1.0 + PublishConfig().report_interval))
    assert due == {"walker": Reason.STEP, "newcomer": Reason.ARRIVAL, "leaving": Reason.DEPARTURE}


def test_a_forgotten_device_is_taken_back_from_the_report() -> None:
    """A Device deleted while heard: its entry leaves the report at the next write (it
    stayed listed, and a Device re-created under its name inherited it)."""
    plan = PublishPlan(PublishConfig())
    plan.set_live(True)
    plan.want("patient", Sighting(-60, 0.0))
    plan.sent_report(plan.report(0.0), 0.0)
    plan.forget("patient")
    later = PublishConfig().report_interval
    assert dict(plan.due(later)) == {"patient": Reason.DEPARTURE}
    assert plan.report(later) == {}
    plan.sent_report(plan.report(later), later)
    assert plan.entries == {}
    plan.forget("never-heard")  # (nothing to take back)
    assert plan.entries == {}


def test_a_crowd_past_the_reports_limit_lists_the_strongest() -> None:
    """The CRD refuses more than maxItems entries, and a refused write would freeze the
    whole report: the weakest are left out, and listed once they are among the strongest."""
    plan = PublishPlan(PublishConfig(), max_listed=3)
    for i, rssi in enumerate([-70, -50, -90, -60, -80]):
        plan.want(f"tag-{i}", Sighting(rssi, 0.0))
    listed = plan.report(0.0)
    assert sorted(listed) == ["tag-0", "tag-1", "tag-3"]
    assert plan.omitted == 2
    plan.sent_report(listed, 0.0)
    plan.want("tag-1", None)  # the strongest leaves: the next one moves up
    later = PublishConfig().report_interval
    assert dict(plan.due(later))["tag-4"] is Reason.ARRIVAL
    assert sorted(plan.report(later)) == ["tag-0", "tag-3", "tag-4"]
    assert plan.omitted == 1


async def test_each_report_write_is_one_result_with_its_most_urgent_reason() -> None:
    """publishes_total counts writes: one write carrying 50 arrivals is one, not 50."""
    from gateway_monitor.kubeapi import ApiError
    from gateway_monitor.publisher import Publisher

    class Api:
        fail = False

        async def patch_cluster_custom_object_status(self, *args: object, **kw: object) -> None:
            if self.fail:
                raise ApiError(500, "Internal Server Error")

    results: list[tuple[Reason, bool]] = []
    now = [0.0]
    api = Api()
    pub = Publisher(
        api,
        "gw1",
        PublishPlan(PublishConfig()),
        backoff=lambda n: 1.0,
        on_result=lambda why, ok: results.append((why, ok)),
        clock=lambda: now[0],
        wall=lambda: 1e9 + now[0],
        liveness=lambda: True,
    )
    for i in range(50):
        pub.update(f"tag-{i}", Sighting(-70, 1e9))
    await pub.flush()
    assert results == [(Reason.ARRIVAL, True)]
    api.fail = True
    pub.update("tag-0", Sighting(-50, 1e9))  # a 20 dB step ...
    pub.update("tag-1", None)  # ... and a departure, in one refused write
    now[0] = 5.0
    await pub.flush()
    assert results[1:] == [(Reason.DEPARTURE, False)]


def test_with_the_lease_a_quiet_report_is_rewritten_within_a_minute() -> None:
    """A report deleted and re-created empty while nothing is due (its node relabelled,
    an admin) is refilled by the safety refresh, well inside the policy's 120 s
    deviceAwayAfter (with 300 s its devices were parked as away)."""
    plan = PublishPlan(PublishConfig())
    plan.set_live(True)
    plan.want("patient", Sighting(-60, 0.0))
    plan.sent_report(plan.report(0.0), 0.0)
    plan.want("patient", Sighting(-61, 30.0))  # 1 dB: no step
    assert plan.due(59.9) == []
    assert plan.due(60.0) == [("patient", Reason.HEARTBEAT)]
