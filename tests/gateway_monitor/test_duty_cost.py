"""The duty-cycle measurement: less listening costs arrival time, never detection."""

from __future__ import annotations

from bench import synthetic_traces
from bench.dutycycle import measure, replay_transitions
from gateway_monitor.scanner import DutyCycle
from gateway_monitor.tracker import TrackerConfig, Transition


def test_replay_through_a_duty_cycle_drops_adverts_in_the_pauses() -> None:
    records = synthetic_traces.stationary("C0:FF:EE:00:00:01", -65.0, duration=100.0, seed=1)
    duty = DutyCycle(on=2.0, period=10.0)
    heard = [r for r in records if duty.scanning(r.t)]
    assert 0.1 * len(records) < len(heard) < 0.3 * len(records)
    flips = replay_transitions(records, duty, TrackerConfig(), until=100.0)
    assert [tr for _, tr in flips] == [Transition.ARRIVED]


def test_arrival_delay_grows_as_the_radio_listens_less() -> None:
    config = TrackerConfig()
    rows = [measure(DutyCycle.parse(c), 12, 1.0, config) for c in ("always", "5/10", "1/10")]
    medians = [sorted(r.arrival)[len(r.arrival) // 2] for r in rows]
    # every run is detected, even at 10 % (the window is stretched to listening time)
    assert all(len(r.arrival) == 12 for r in rows)
    assert medians[0] < medians[1] < medians[2]
    # always-on reacts within a few adverts (1 s apart)
    assert medians[0] <= 4.0
    # away is governed by the timeout from the last advert heard, never later than it
    assert all(a <= config.away_timeout + 0.5 for r in rows for a in r.away)
