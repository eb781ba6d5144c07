"""Windows (edges, late readings, partial close) and alerts (first, repeat, re-arm)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from omh_consolidator.consolidate import Alert, Consolidator, Thresholds, WindowSummary

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC).timestamp()  # a whole minute


def test_a_reading_exactly_on_the_boundary_opens_the_next_window() -> None:
    c = Consolidator(60)
    assert c.add(T0, 60).closed == []
    assert c.add(T0 + 59.999, 80).closed == []  # still the first minute
    out = c.add(T0 + 60, 100)  # exactly 10:01:00.000
    assert out.closed == [WindowSummary(T0, T0 + 60, count=2, minimum=60, maximum=80, mean=70.0)]
    assert c.close_partial(T0 + 61) == [
        WindowSummary(T0 + 60, T0 + 61, count=1, minimum=100, maximum=100, mean=100.0)
    ]


def test_the_first_reading_of_a_window_is_its_start_instant() -> None:
    c = Consolidator(60)
    c.add(T0 - 0.001, 50)  # 09:59:59.999: the previous minute
    out = c.add(T0, 70)
    assert [(s.start, s.end, s.count) for s in out.closed] == [(T0 - 60, T0, 1)]


def test_the_clock_closes_a_window_at_its_end_not_before() -> None:
    c = Consolidator(60)
    c.add(T0 + 10, 70)
    assert c.close_due(T0 + 59.999) == []
    assert c.close_due(T0 + 60) == [WindowSummary(T0, T0 + 60, 1, 70, 70, 70.0)]
    assert c.close_due(T0 + 120) == []  # nothing open any more
    c.add(T0 + 150, 90)  # a gap of a minute with no readings: no empty window
    assert c.close_due(T0 + 180) == [WindowSummary(T0 + 120, T0 + 180, 1, 90, 90, 90.0)]


def test_closed_windows_are_final_and_older_readings_count_as_late() -> None:
    c = Consolidator(60)
    c.add(T0 + 5, 70)
    c.add(T0 + 65, 72)  # closes the first minute
    out = c.add(T0 + 30, 200)  # the wall clock stepped back into the closed minute
    assert out.closed == []
    assert c.late == 1
    assert [a.bpm for a in out.alerts] == [200]  # late, but still alarming
    assert c.close_partial(T0 + 70)[0].count == 1  # 72 only


def test_a_wall_clock_step_back_closes_the_open_window_and_starts_over() -> None:
    c = Consolidator(60)
    c.add(T0 + 86_400 + 5, 70)  # the clock ran a day ahead
    c.add(T0 + 86_400 + 6, 72)
    out = c.add(T0 + 5, 80)  # NTP steps it back a day
    assert out.closed == [WindowSummary(T0 + 86_400, T0 + 86_460, 2, 70, 72, 71.0)]
    assert (c.late, c.clock_steps) == (0, 1)
    c.add(T0 + 30, 90)
    assert c.close_due(T0 + 60) == [WindowSummary(T0, T0 + 60, 2, 80, 90, 85.0)]
    c.add(T0 + 61, 70)  # the clock runs on from there: no further step
    assert c.clock_steps == 1


def test_a_step_back_with_no_window_open_starts_over_too() -> None:
    c = Consolidator(60)
    c.add(T0 + 3600, 70)
    assert len(c.close_due(T0 + 3660)) == 1  # the clock closed it: nothing open
    c.add(T0 + 10, 75)  # an hour back
    assert (c.late, c.clock_steps) == (0, 1)
    assert c.close_due(T0 + 60) == [WindowSummary(T0, T0 + 60, 1, 75, 75, 75.0)]


def test_a_repeat_alert_is_not_held_back_by_one_stamped_before_a_step_back() -> None:
    c = Consolidator(60, Thresholds(repeat_s=60))
    assert len(c.add(T0 + 86_400, 190).alerts) == 1
    assert len(c.add(T0, 190).alerts) == 1  # a day back: due at once, not in a day
    assert c.add(T0 + 30, 190).alerts == []  # then every repeat_s again
    assert len(c.add(T0 + 60, 190).alerts) == 1


def test_mean_min_max_over_a_minute_of_1hz_readings() -> None:
    c = Consolidator(60)
    bpms = [60 + (i % 7) for i in range(60)]
    for i, bpm in enumerate(bpms):
        assert c.add(T0 + i, bpm).closed == []
    (s,) = c.close_due(T0 + 60)
    assert (s.count, s.minimum, s.maximum) == (60, 60, 66)
    assert s.mean == round(sum(bpms) / 60, 1)


@pytest.mark.parametrize("window", [1.0, 15.0, 300.0])
def test_windows_align_to_the_epoch_for_any_length(window: float) -> None:
    c = Consolidator(window)
    start, end = c.window_of(T0 + 7.5)
    assert start <= T0 + 7.5 < end
    assert end - start == window
    assert start % window == 0


def test_alerts_first_at_once_then_at_most_every_repeat_then_rearmed() -> None:
    c = Consolidator(60, Thresholds(low_bpm=40, high_bpm=150, repeat_s=30))
    seq = [(0, 120), (1, 151), (2, 160), (31, 155), (32, 152), (40, 100), (41, 151), (42, 35)]
    alerts = [a for t, bpm in seq for a in c.add(T0 + t, bpm).alerts]
    assert alerts == [
        Alert(T0 + 1, 151, "high", 150),  # first out-of-range reading
        Alert(T0 + 31, 155, "high", 150),  # 30 s later, still high
        Alert(T0 + 41, 151, "high", 150),  # back in range at t=40 re-armed it
        Alert(T0 + 42, 35, "low", 40),  # the other side alerts at once
    ]


def test_thresholds_are_exclusive_and_repeat_zero_alerts_every_reading() -> None:
    c = Consolidator(60, Thresholds(low_bpm=40, high_bpm=150, repeat_s=0))
    assert c.add(T0, 150).alerts == []
    assert c.add(T0 + 1, 40).alerts == []
    assert len(c.add(T0 + 2, 39).alerts) == 1
    assert len(c.add(T0 + 3, 39).alerts) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"low_bpm": 100, "high_bpm": 90}, "low < high"),
        ({"low_bpm": -1}, "low < high"),
        ({"repeat_s": -1}, "repeat_s"),
    ],
)
def test_bad_thresholds_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Thresholds(**kwargs)  # type: ignore[arg-type]


def test_partial_close_with_nothing_open_sends_nothing() -> None:
    assert Consolidator(60).close_partial(T0) == []
