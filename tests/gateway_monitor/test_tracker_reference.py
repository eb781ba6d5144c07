"""The tracker's fast path (sorted windows, bisection, no tuple per advert) equals the
straightforward implementation it replaced (tracker_reference.py), float for float, on
random windows and random advert streams: the replay speed-up must not move a decision."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_monitor.tracker import Thresholds, Tracker, TrackerConfig, robust_mean
from tests.gateway_monitor.tracker_reference import ReferenceTracker, reference_robust_mean

readings = st.one_of(
    st.integers(min_value=-127, max_value=20),
    st.floats(min_value=-130.0, max_value=25.0, allow_nan=False),
)


@given(st.lists(readings, min_size=1, max_size=40))
@settings(max_examples=2000)
def test_robust_mean_equals_the_reference_to_the_bit(values: list[float]) -> None:
    got, want = robust_mean(values), reference_robust_mean(values)
    assert got == want, (values, got, want)
    assert type(got) is type(want), (values, got, want)


def test_robust_mean_on_windows_with_outliers_and_ties() -> None:
    rng = random.Random(19)
    for _ in range(20_000):
        n = rng.randint(1, 33)
        base = rng.uniform(-95, -45)
        values = [round(base + rng.gauss(0, 4)) + rng.choice((0.0, 0.5, -2.25)) for _ in range(n)]
        for _ in range(rng.randint(0, 3)):  # one-sided outliers, as BLE has
            values[rng.randrange(n)] = base - rng.uniform(15, 40)
        assert robust_mean(values) == reference_robust_mean(values), values


def _config(rng: random.Random) -> TrackerConfig:
    enter = rng.uniform(-85, -60)
    window = rng.choice((3.0, 10.0, 20.0))
    return TrackerConfig(
        thresholds=Thresholds(enter=enter, leave=enter - rng.uniform(0, 15)),
        away_timeout=rng.choice((5.0, 30.0)),
        window=window,
        rssi_window=rng.choice((0.5, 2.0, window, 2 * window)),
        leave_hold=rng.choice((0.0, 2.0, 5.0)),
        max_samples=rng.choice((3, 8, 32)),
        arrive_samples=rng.choice((1, 2, 3)),
        offset=rng.choice((0.0, 2.5, -4.7)),
    )


def test_tracker_equals_the_reference_on_random_streams() -> None:
    """Every Update (state, smoothed RSSI, transition) of observe, tick and state, on
    streams with bursts, silences, clocks that step back, overrides and calibration."""
    seen_rssi = seen_transitions = 0
    for seed in range(150):
        rng = random.Random(seed)
        cfg = _config(rng)
        fast = Tracker(cfg)
        overrides = {}
        if rng.random() < 0.5:
            fast.set_thresholds("b", -70.0, None)
            overrides["b"] = fast.thresholds("b")
        ref = ReferenceTracker(cfg, overrides)
        now = 0.0
        level = {k: rng.uniform(-95, -55) for k in "abc"}
        for _ in range(600):
            r = rng.random()
            if r < 0.02:
                now += rng.uniform(5, 40)  # a silence
            elif r < 0.04:
                now -= rng.uniform(0, 1.5)  # a live clock may step back
            else:
                now += rng.choice((0.0, rng.expovariate(3.0)))  # ties included
            if rng.random() < 0.1:
                assert fast.tick(now) == ref.tick(now)
                continue
            key = rng.choice("abc")
            level[key] = min(-40.0, max(-100.0, level[key] + rng.gauss(0, 2)))
            raw = round(level[key] + rng.gauss(0, 4))
            if rng.random() < 0.05:
                raw -= rng.randint(15, 30)
            got, want = fast.observe(key, raw, now), ref.observe(key, raw, now)
            assert got == want, (seed, key, raw, now)
            assert fast.state(key) == ref.state(key)
            seen_rssi += got.state.rssi is not None
            seen_transitions += got.transition is not None
    # The streams exercised the paths that matter (not vacuous).
    assert seen_rssi > 50_000, seen_rssi
    assert seen_transitions > 1_000, seen_transitions


def test_non_monotonic_clock_keeps_the_whole_window_filter() -> None:
    """A reading stamped before the previous one: the rssi window is then the filter
    over every reading, not a tail (the bisection needs ordered times)."""
    cfg = TrackerConfig(rssi_window=2.0, arrive_samples=1)
    fast, ref = Tracker(cfg), ReferenceTracker(cfg, {})
    for t, raw in ((10.0, -60), (11.0, -80), (9.5, -50), (12.0, -70), (12.5, -61)):
        assert fast.observe("d", raw, t) == ref.observe("d", raw, t)
    assert fast.state("d") == ref.state("d")
