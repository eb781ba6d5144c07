"""Advertisement traces: the JSONL replay format and seeded synthetic scenarios.

One JSON object per line: ``t`` (seconds from the start), ``address``, ``rssi`` (dBm) and
optionally ``name``, ``manufacturer_data`` (company ID as a decimal string -> hex bytes)
and ``service_uuids``. Lines are replayed in file order; ``t`` must not go backwards.

The synthetic scenarios use the log-distance model ``rssi = p1m - 10 n log10(d)`` plus
Gaussian noise and random packet loss, with a fixed seed so tests and measurements are
reproducible.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SENSITIVITY = -95.0  # weaker adverts are not received at all (typical BLE 1M PHY receiver)


class TraceError(ValueError):
    """A trace line that does not follow the format; names the file and line."""


@dataclass(frozen=True, slots=True)
class TraceRecord:
    t: float
    address: str
    rssi: int
    name: str | None = None
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_uuids: tuple[str, ...] = ()

    def to_json(self) -> str:
        obj: dict[str, object] = {"t": round(self.t, 3), "address": self.address, "rssi": self.rssi}
        if self.name is not None:
            obj["name"] = self.name
        if self.manufacturer_data:
            obj["manufacturer_data"] = {str(k): v.hex() for k, v in self.manufacturer_data.items()}
        if self.service_uuids:
            obj["service_uuids"] = list(self.service_uuids)
        return json.dumps(obj, separators=(",", ":"))


def parse_line(line: str, where: str = "<trace>") -> TraceRecord:
    """Parse one trace line; raises TraceError naming ``where`` on bad input."""
    try:
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise TypeError("not a JSON object")
        mfr_raw = obj.get("manufacturer_data") or {}
        if not isinstance(mfr_raw, dict):
            raise TypeError("manufacturer_data must be an object")
        uuids = obj.get("service_uuids") or []
        if not isinstance(uuids, list):
            raise TypeError("service_uuids must be a list")
        name = obj.get("name")
        return TraceRecord(
            t=float(obj["t"]),
            address=str(obj["address"]).upper(),
            rssi=int(obj["rssi"]),
            name=None if name is None else str(name),
            manufacturer_data={int(k): bytes.fromhex(str(v)) for k, v in mfr_raw.items()},
            service_uuids=tuple(str(u) for u in uuids),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TraceError(f"{where}: {exc!r}") from exc


def read_trace(path: Path) -> list[TraceRecord]:
    """Read a whole trace; raises TraceError if a line is malformed or time goes backwards."""
    out: list[TraceRecord] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = parse_line(line, f"{path}:{lineno}")
            if out and rec.t < out[-1].t:
                raise TraceError(f"{path}:{lineno}: t goes backwards ({rec.t} < {out[-1].t})")
            out.append(rec)
    return out


def write_trace(path: Path, records: Iterable[TraceRecord]) -> None:
    path.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")


# --- synthetic scenarios ---------------------------------------------------------------


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


def iter_merged(traces: Sequence[Sequence[TraceRecord]]) -> Iterator[tuple[int, TraceRecord]]:
    """Records of several traces in time order, tagged with the trace's index."""
    tagged = [(r.t, i, r) for i, trace in enumerate(traces) for r in trace]
    for _, i, r in sorted(tagged, key=lambda x: (x[0], x[1])):
        yield i, r


def main(argv: Sequence[str] | None = None) -> None:
    """Write the demo's synthetic traces: ``python -m gateway_monitor.traces OUTDIR``."""
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
