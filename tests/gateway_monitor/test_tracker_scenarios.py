"""The pure tracker on the issue's scenarios: walk, stationary noise, boundary, disappearance."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from bench import synthetic_traces
from gateway_monitor import traces
from gateway_monitor.tracker import Tracker, TrackerConfig, Transition

ADDR = "C0:FF:EE:00:00:01"


def run(
    records: Sequence[traces.TraceRecord], tracker: Tracker, until: float | None = None
) -> list[tuple[float, Transition]]:
    """Feed a trace and tick once per advert, as the monitor does; return the flips."""
    out: list[tuple[float, Transition]] = []
    for rec in records:
        out += [(rec.t, u.transition) for u in tracker.tick(rec.t) if u.transition]
        update = tracker.observe("dev", rec.rssi, rec.t)
        if update.transition:
            out.append((rec.t, update.transition))
    if until is not None:
        t = records[-1].t if records else 0.0
        while t < until:
            t += 0.5
            out += [(t, u.transition) for u in tracker.tick(t) if u.transition]
    return out


def adverts_between(records: Sequence[traces.TraceRecord], a: float, b: float) -> int:
    lo, hi = min(a, b), max(a, b)
    return sum(1 for r in records if lo < r.t <= hi)


def crossing(
    scenario: synthetic_traces.Walk, gateway_at: float, level: float, rising: bool
) -> float:
    """First time the model's mean RSSI at a gateway crosses ``level`` (0.1 s steps)."""
    t = 0.0
    while t < 1000.0:
        mean = scenario.mean_rssi(t, gateway_at)
        if (mean >= level) if rising else (mean < level):
            return t
        t += 0.1
    raise AssertionError("no crossing")


@pytest.mark.parametrize("seed", range(1, 11))
def test_walk_from_gw1_to_gw2_flips_each_gateway_once_within_bounded_adverts(seed: int) -> None:
    scenario = synthetic_traces.Walk(start=1.0, end=19.0, depart=60.0, speed=1.0)
    gw1_trace, gw2_trace = synthetic_traces.walk(
        ADDR, [0.0, 20.0], scenario, duration=180.0, seed=seed
    )
    cfg = TrackerConfig()
    gw1 = run(gw1_trace, Tracker(cfg))
    gw2 = run(gw2_trace, Tracker(cfg))

    # gw1 hears the device standing next to it, then loses it exactly once.
    assert [tr for _, tr in gw1] == [Transition.ARRIVED, Transition.DEPARTED]
    # gw2 starts out not hearing it and claims it exactly once.
    assert [tr for _, tr in gw2] == [Transition.ARRIVED]

    left = crossing(scenario, 0.0, cfg.thresholds.leave, rising=False)
    entered = crossing(scenario, 20.0, cfg.thresholds.enter, rising=True)
    gw1_departed, gw2_arrived = gw1[1][0], gw2[0][0]
    # Departure is deliberately slow (window + hold) but bounded: at most ~20 adverts.
    assert gw1_departed > left
    assert adverts_between(gw1_trace, left, gw1_departed) <= 20
    # Arrival is fast: within a handful of adverts of the true crossing, either side.
    assert adverts_between(gw2_trace, entered, gw2_arrived) <= 8


@pytest.mark.parametrize("seed", range(1, 21))
@pytest.mark.parametrize("mean", [-72.0, -75.0, -80.0])
def test_stationary_device_with_4db_noise_never_flaps(seed: int, mean: float) -> None:
    # An hour of a device that does not move, between "clearly in" and mid-band.
    records = synthetic_traces.stationary(ADDR, mean, duration=3600.0, noise_sd=4.0, seed=seed)
    flips = run(records, Tracker())
    assert [tr for _, tr in flips] == [Transition.ARRIVED]


@pytest.mark.parametrize("seed", range(1, 11))
def test_stationary_far_device_is_never_claimed(seed: int) -> None:
    records = synthetic_traces.stationary(ADDR, -90.0, duration=3600.0, noise_sd=4.0, seed=seed)
    assert run(records, Tracker()) == []


@pytest.mark.parametrize("seed", range(1, 11))
def test_device_oscillating_at_enter_threshold_is_claimed_once(seed: int) -> None:
    # Pacing around the enter level never reaches leave: one arrival, no departure.
    records = synthetic_traces.oscillating(
        ADDR, center=-75.0, amplitude=5.0, period=30.0, seed=seed
    )
    flips = run(records, Tracker())
    assert [tr for _, tr in flips] == [Transition.ARRIVED]


@pytest.mark.parametrize("seed", range(1, 11))
def test_device_oscillating_across_the_band_changes_at_most_twice_per_swing(seed: int) -> None:
    period, duration = 60.0, 1200.0
    records = synthetic_traces.oscillating(
        ADDR, center=-80.0, amplitude=10.0, period=period, duration=duration, seed=seed
    )
    flips = run(records, Tracker())
    swings = duration / period
    # It really does come and go (the test would pass vacuously otherwise) ...
    assert len(flips) >= swings
    # ... but never more than one arrival and one departure per swing, alternating.
    assert len(flips) <= 2 * swings
    kinds = [tr for _, tr in flips]
    assert all(a != b for a, b in itertools.pairwise(kinds))


@pytest.mark.parametrize("timeout", [10.0, 30.0, 60.0])
def test_disappearance_is_away_after_the_timeout_not_before(timeout: float) -> None:
    records = synthetic_traces.disappearing(ADDR, -65.0, stop_at=100.0, duration=100.0)
    flips = run(records, Tracker(TrackerConfig(away_timeout=timeout)), until=400.0)
    assert [tr for _, tr in flips] == [Transition.ARRIVED, Transition.DEPARTED]
    last_heard = records[-1].t
    departed_at = flips[1][0]
    assert last_heard + timeout <= departed_at <= last_heard + timeout + 0.5
