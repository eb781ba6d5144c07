"""Seeded synthetic advertisement traces for tests, the demo and measurements.

The scenarios use the log-distance model ``rssi = p1m - 10 n log10(d)`` plus
Gaussian noise and random packet loss, with a fixed seed so tests and
measurements are reproducible. They are written in the gateway monitor's replay
format (gateway_monitor/traces.py).
"""

from __future__ import annotations

import argparse
import functools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway_monitor.traces import TraceRecord, write_trace

SENSITIVITY = -95.0  # weaker adverts are not received at all (typical BLE 1M PHY receiver)


def log_distance(d: float, p1m: float = -59.0, n: float = 2.7) -> float:
    """Mean RSSI at ``d`` metres (ESPresense uses an exponent of 2.7 indoors)."""
    return p1m - 10.0 * n * math.log10(max(d, 0.1))


def _emit(
    address: str,
    duration: float,
    mean_at: Callable[[float], float | None],
    *,
    interval: float,
    noise_sd: float,
    loss: float,
    seed: int,
    name: str | None,
) -> list[TraceRecord]:
    rng = random.Random(seed)
    out: list[TraceRecord] = []
    t = rng.uniform(0.0, interval)
    while t < duration:
        mean = mean_at(t)
        if mean is not None and rng.random() >= loss:
            rssi = mean + rng.gauss(0.0, noise_sd)
            if rssi >= SENSITIVITY:
                out.append(TraceRecord(t=t, address=address, rssi=round(rssi), name=name))
        # advInterval plus BLE's 0-10 ms random advDelay and scheduling jitter
        t += interval * rng.uniform(0.9, 1.1)
    return out


def stationary(
    address: str,
    mean: float,
    *,
    duration: float = 600.0,
    noise_sd: float = 4.0,
    interval: float = 1.0,
    loss: float = 0.1,
    seed: int = 1,
    name: str | None = None,
) -> list[TraceRecord]:
    return _emit(
        address,
        duration,
        lambda _t: mean,
        interval=interval,
        noise_sd=noise_sd,
        loss=loss,
        seed=seed,
        name=name,
    )


def oscillating(
    address: str,
    center: float,
    amplitude: float,
    period: float,
    *,
    duration: float = 600.0,
    noise_sd: float = 4.0,
    interval: float = 1.0,
    loss: float = 0.1,
    seed: int = 2,
) -> list[TraceRecord]:
    """A device pacing back and forth: the mean swings sinusoidally around ``center``."""
    return _emit(
        address,
        duration,
        lambda t: center + amplitude * math.sin(2 * math.pi * t / period),
        interval=interval,
        noise_sd=noise_sd,
        loss=loss,
        seed=seed,
        name=None,
    )


def disappearing(
    address: str,
    mean: float,
    stop_at: float,
    *,
    duration: float = 300.0,
    noise_sd: float = 4.0,
    interval: float = 1.0,
    seed: int = 3,
) -> list[TraceRecord]:
    """Heard steadily until ``stop_at`` (battery dies, device leaves), then silence."""
    return _emit(
        address,
        duration,
        lambda t: mean if t < stop_at else None,
        interval=interval,
        noise_sd=noise_sd,
        loss=0.1,
        seed=seed,
        name=None,
    )


@dataclass(frozen=True, slots=True)
class Walk:
    """A straight walk between gateways placed on a line (positions in metres)."""

    start: float = 1.0
    end: float = 19.0
    depart: float = 60.0  # the device stands still at ``start`` until then
    speed: float = 1.0  # m/s, walking pace
    p1m: float = -59.0
    exponent: float = 2.7

    def position(self, t: float) -> float:
        direction = 1.0 if self.end >= self.start else -1.0
        travelled = max(0.0, t - self.depart) * self.speed
        return self.start + direction * min(travelled, abs(self.end - self.start))

    def mean_rssi(self, t: float, gateway_at: float) -> float:
        return log_distance(abs(self.position(t) - gateway_at), self.p1m, self.exponent)


def _walk_mean(scenario: Walk, gateway_at: float, t: float) -> float | None:
    return scenario.mean_rssi(t, gateway_at)


def walk(
    address: str,
    gateways: Sequence[float],
    scenario: Walk = Walk(),
    *,
    duration: float = 180.0,
    noise_sd: float = 4.0,
    interval: float = 1.0,
    loss: float = 0.1,
    seed: int = 4,
) -> list[list[TraceRecord]]:
    """One trace per gateway (same walk, independent noise per receiver)."""
    return [
        _emit(
            address,
            duration,
            functools.partial(_walk_mean, scenario, g),
            interval=interval,
            noise_sd=noise_sd,
            loss=loss,
            seed=seed * 100 + i,
            name=None,
        )
        for i, g in enumerate(gateways)
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Write the demo's synthetic traces: ``python -m bench.synthetic_traces OUTDIR``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--address", default="C0:FF:EE:00:00:01")
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    gw1, gw2 = walk(args.address, gateways=[0.0, 20.0])
    write_trace(args.outdir / "walk-gw1.jsonl", gw1)
    write_trace(args.outdir / "walk-gw2.jsonl", gw2)
    write_trace(args.outdir / "stationary.jsonl", stationary(args.address, -70.0))


if __name__ == "__main__":
    main()
