"""Unit rules of the tracker: robust smoothing, calibration, per-device thresholds."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_monitor.tracker import (
    ConfigError,
    Thresholds,
    Tracker,
    TrackerConfig,
    Transition,
    robust_mean,
)


def test_robust_mean_ignores_a_one_sided_outlier() -> None:
    values = [-70.0, -71.0, -69.0, -70.0, -72.0, -68.0, -40.0]
    assert robust_mean(values) == pytest.approx(-70.0)
    # the plain mean would have been dragged up by the reflection
    assert sum(values) / len(values) > -66.0


def test_single_strong_spike_from_a_far_device_does_not_claim_presence() -> None:
    tracker = Tracker()
    for i, rssi in enumerate([-92, -91, -60, -93, -90]):
        assert tracker.observe("d", rssi, float(i)).transition is None
    state = tracker.state("d")
    assert state is not None
    assert not state.present


def test_two_of_three_readings_above_enter_claim_presence_at_once() -> None:
    tracker = Tracker()
    assert tracker.observe("d", -90, 0.0).transition is None
    assert tracker.observe("d", -60, 1.0).transition is None
    update = tracker.observe("d", -62, 2.0)
    assert update.transition is Transition.ARRIVED
    # the approach reading (-90) no longer drags the reported value down
    assert update.state.rssi is not None
    assert update.state.rssi >= -75


def test_calibration_offset_shifts_both_judgement_and_reported_rssi() -> None:
    raw = [-80, -80, -80]
    plain, boosted = Tracker(), Tracker(TrackerConfig(offset=+8.0))
    flips_plain = [plain.observe("d", r, float(i)).transition for i, r in enumerate(raw)]
    flips_boosted = [boosted.observe("d", r, float(i)).transition for i, r in enumerate(raw)]
    assert Transition.ARRIVED not in flips_plain
    assert flips_boosted[-1] is Transition.ARRIVED
    state = boosted.state("d")
    assert state is not None
    assert state.rssi == -72


def test_set_offset_applies_to_later_readings() -> None:
    tracker = Tracker()
    tracker.set_offset(-10.0)
    for i in range(3):
        tracker.observe("d", -60, float(i))
    state = tracker.state("d")
    assert state is not None
    assert state.rssi == -70


def test_per_device_thresholds_override_and_keep_the_gap() -> None:
    tracker = Tracker(TrackerConfig(thresholds=Thresholds(enter=-75, leave=-85)))
    tracker.set_thresholds("near-only", enter=-60, leave=None)
    assert tracker.thresholds("near-only") == Thresholds(enter=-60, leave=-70)
    tracker.set_thresholds("leave-only", enter=None, leave=-95)
    assert tracker.thresholds("leave-only") == Thresholds(enter=-85, leave=-95)
    tracker.set_thresholds("near-only", None, None)
    assert tracker.thresholds("near-only") == Thresholds(enter=-75, leave=-85)
    tracker.set_thresholds("strict", enter=-60, leave=-70)
    for i in range(3):
        tracker.observe("default", -65, float(i))
        tracker.observe("strict", -65, float(i))
    default, strict = tracker.state("default"), tracker.state("strict")
    assert default is not None
    assert default.present
    assert strict is not None
    assert not strict.present


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError):
        Thresholds(enter=-90, leave=-80)
    with pytest.raises(ConfigError):
        TrackerConfig(away_timeout=0)
    with pytest.raises(ConfigError):
        TrackerConfig(arrive_samples=40, max_samples=32)


def test_forget_drops_state_and_long_silent_away_devices_are_pruned() -> None:
    tracker = Tracker(TrackerConfig(away_timeout=10.0))
    tracker.observe("a", -90, 0.0)
    tracker.observe("b", -90, 0.0)
    tracker.forget("a")
    assert tracker.state("a") is None
    assert tracker.tick(100.0) == []
    assert tracker.state("b") is None


@given(
    st.lists(
        st.tuples(st.floats(0.0, 5.0), st.integers(-140, 40)),
        min_size=1,
        max_size=200,
    )
)
def test_any_sequence_alternates_flips_and_reports_in_crd_range(
    steps: list[tuple[float, int]],
) -> None:
    tracker = Tracker()
    now, present, flips = 0.0, False, []
    for dt, rssi in steps:
        now += dt
        updates = [*tracker.tick(now), tracker.observe("d", rssi, now)]
        for u in updates:
            assert u.state.rssi is None or -127 <= u.state.rssi <= 20
            if u.transition is not None:
                flips.append(u.transition)
                present = u.transition is Transition.ARRIVED
            assert u.state.present == present
    assert all(a != b for a, b in itertools.pairwise(flips))


def test_quartiles_are_the_statistics_modules_floats() -> None:
    """The tracker's own Q1/Q3 (hot path) equals statistics.quantiles' inclusive ones to
    the bit, so the robust mean, and every decision after it, is unchanged."""
    import random
    import statistics

    from gateway_monitor.tracker import _quartiles

    rng = random.Random(7)
    for n in range(4, 64):
        for _ in range(50):
            values = [
                rng.randint(-100, -30) if rng.random() < 0.5 else rng.uniform(-100, -30)
                for _ in range(n)
            ]
            q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
            assert _quartiles(values) == (q1, q3), values
