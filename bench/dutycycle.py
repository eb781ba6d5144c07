"""What a scan duty cycle costs in detection delay, measured on replayed traces.

``python -m bench.dutycycle`` replays seeded synthetic traces through the same
path as the live monitor (replay source with the duty cycle's gaps -> Device lookup ->
tracker) on a virtual clock, and prints a Markdown table of:

- arrival delay: a device switched on near the gateway (random phase against the scan
  cycle) until the gateway claims presence;
- handover delay: on the gw1 -> gw2 walk, from the true crossing of the enter level at
  gw2 until gw2 claims presence;
- away delay: from the device's switch-off until the gateway gives presence up.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench import synthetic_traces
from gateway_monitor import traces
from gateway_monitor.metrics import Metrics
from gateway_monitor.monitor import Monitor
from gateway_monitor.publisher import Sighting
from gateway_monitor.registry import DeviceSpec, Registry
from gateway_monitor.scanner import Advert, DutyCycle, ReplaySource
from gateway_monitor.settings import scaled_for_duty
from gateway_monitor.tracker import Tracker, TrackerConfig, Transition

ADDRESS = "C0:FF:EE:00:00:01"
DEVICE = "wearable"


class _NullSink:
    def update(self, device: str, sighting: Sighting | None) -> None:
        pass

    def adopt(self, device: str, sighting: Sighting) -> None:
        pass

    def forget(self, device: str) -> None:
        pass


def replay_transitions(
    records: Sequence[traces.TraceRecord],
    duty: DutyCycle,
    config: TrackerConfig,
    *,
    until: float,
    tick: float = 0.1,
) -> list[tuple[float, Transition]]:
    """Presence flips of one gateway replaying ``records``, on a virtual clock."""
    now = 0.0
    registry = Registry()
    registry.replace_all([DeviceSpec(DEVICE, ADDRESS)])
    flips: list[tuple[float, Transition]] = []
    monitor = Monitor(
        "gw",
        Tracker(scaled_for_duty(config, duty)),
        registry,
        _NullSink(),
        Metrics(),
        clock=lambda: now,
        wall=lambda: 0.0,
        on_transition=lambda t, _device, transition: flips.append((t, transition)),
    )

    def advance(to: float) -> None:
        nonlocal now
        while now + tick <= to:
            now += tick
            monitor.tick()
        now = to
        monitor.tick()

    def sink(advert: Advert) -> None:
        advance(advert.t)
        monitor.on_advert(advert)

    ReplaySource(records, duty=duty).feed(sink)
    advance(until)
    return flips


@dataclass(frozen=True, slots=True)
class Row:
    duty: DutyCycle
    arrival: list[float]
    handover: list[float]
    away: list[float]


def _shift(records: Sequence[traces.TraceRecord], by: float) -> list[traces.TraceRecord]:
    return [
        traces.TraceRecord(t=r.t + by, address=r.address, rssi=r.rssi, name=r.name) for r in records
    ]


def measure(duty: DutyCycle, runs: int, interval: float, config: TrackerConfig) -> Row:
    arrival: list[float] = []
    handover: list[float] = []
    away: list[float] = []
    rng = random.Random(42)
    enter = config.thresholds.enter
    for run in range(runs):
        # Arrival: switched on at a random phase of the scan cycle, -65 dBm, 4 dB noise.
        start = rng.uniform(0.0, duty.period) + 100.0
        on = _shift(
            synthetic_traces.stationary(
                ADDRESS, -65.0, duration=120.0, interval=interval, seed=run
            ),
            start,
        )
        flips = replay_transitions(on, duty, config, until=start + 120.0)
        if flips and flips[0][1] is Transition.ARRIVED:
            arrival.append(flips[0][0] - start)

        # Handover: the walk, seen from gw2; shifted by a random phase as well.
        walk = synthetic_traces.Walk()
        phase = rng.uniform(0.0, duty.period)
        _, gw2 = synthetic_traces.walk(ADDRESS, [0.0, 20.0], walk, interval=interval, seed=run)
        gw2 = _shift(gw2, phase)
        crossing = next(t / 10 for t in range(0, 3000) if walk.mean_rssi(t / 10, 20.0) >= enter)
        flips = replay_transitions(gw2, duty, config, until=250.0)
        if flips and flips[0][1] is Transition.ARRIVED:
            handover.append(flips[0][0] - (crossing + phase))

        # Away: present, then silent from a random time on.
        stop = 60.0 + rng.uniform(0.0, duty.period)
        gone = synthetic_traces.disappearing(
            ADDRESS, -65.0, stop_at=stop, duration=stop, interval=interval, seed=run
        )
        flips = replay_transitions(gone, duty, config, until=stop + 4 * config.away_timeout)
        departures = [t for t, tr in flips if tr is Transition.DEPARTED]
        if departures:
            away.append(departures[0] - stop)
    return Row(duty, arrival, handover, away)


def _fmt(values: list[float], runs: int) -> str:
    if not values:
        return "never"
    q = statistics.quantiles(values, n=20, method="inclusive") if len(values) > 1 else values
    missed = f" ({runs - len(values)} missed)" if len(values) < runs else ""
    return f"{statistics.median(values):.1f} / {q[-1]:.1f} / {max(values):.1f}{missed}"


def table(rows: Sequence[Row], runs: int) -> str:
    out = [
        "| duty cycle (on/period s) | radio on | arrival s (p50 / p95 / max) "
        "| handover s (p50 / p95 / max) | away after switch-off s (p50 / p95 / max) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        name = "always" if row.duty.always_on else f"{row.duty.on:g}/{row.duty.period:g}"
        out.append(
            f"| {name} | {100 * row.duty.fraction:.0f}% | {_fmt(row.arrival, runs)} "
            f"| {_fmt(row.handover, runs)} | {_fmt(row.away, runs)} |"
        )
    return "\n".join(out)


DEFAULT_CYCLES = ("always", "5/10", "2/10", "1/10", "3/30", "2/20")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="seeded runs per duty cycle")
    parser.add_argument("--interval", type=float, default=1.0, help="advertising interval, s")
    parser.add_argument("--cycles", nargs="*", default=list(DEFAULT_CYCLES))
    args = parser.parse_args(argv)
    config = TrackerConfig()
    rows = [measure(DutyCycle.parse(c), args.runs, args.interval, config) for c in args.cycles]
    print(
        f"advert interval {args.interval:g} s, {args.runs} runs each, defaults: enter "
        f"{config.thresholds.enter:g}, leave {config.thresholds.leave:g}, away timeout "
        f"{config.away_timeout:g} s, window {config.window:g} s\n"
    )
    print(table(rows, args.runs))


if __name__ == "__main__":
    main()
