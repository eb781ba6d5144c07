"""What replay reads: advert recordings, ground and ground truth.

Adverts come in two layouts, merged onto one timeline:

* CSV (optionally gzipped), one reception per row: ``time_s``, ``gateway``, ``rssi_dbm``
  and optionally ``device`` (one device called ``tag`` when absent). This is the layout
  of the recordings under ``tests/data/ble-flat``; other columns are ignored.
* The monitor's trace format (JSONL, ``t``, ``address``, ``rssi``; what
  ``cloud4iot-gateway-monitor --record`` writes), one file per gateway given as
  ``NODE=FILE``. The device is the Device a ``--record`` line names (one device across
  the rotating addresses of a Device with an identity key), else its address (or the
  name ``--device NAME=ADDRESS`` maps, ADDRESS on air or the recorded identity).

Truth is a CSV with ``time_s`` and ``nearest_gateway`` (optionally ``device``): rows are
samples of which gateway was really nearest at that time.

Bad input raises InputError naming the file and line; nothing is half-read.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway_monitor.traces import ADDRESS, TraceError, parse_line

DEFAULT_DEVICE = "tag"


class InputError(ValueError):
    """A recording, truth or load file replay cannot use; says which and where."""


# Seconds beyond this (year 5138) are no recording's: almost always epoch milliseconds,
# microseconds or nanoseconds. Past ~4.5e15 the chain's 0.25 s tick is lost in rounding
# and a replay never ended.
MAX_TIME_S = 1e11


def check_time(t: float, where: str, column: str = "time_s") -> None:
    """Refuse a time that is not finite seconds a replay can step through."""
    if not math.isfinite(t):
        raise InputError(f"{where}: {column} {t} is not a finite time")
    if abs(t) > MAX_TIME_S:
        raise InputError(
            f"{where}: {column} {t:.6g} is beyond ±{MAX_TIME_S:.0e} s (year 5138):"
            " epoch milliseconds, microseconds or nanoseconds? replay reads seconds"
        )


# A received advert's RSSI as HCI reports it: -127..+20 dBm (127 is "not available").
# Both layouts are held to it, so a file is not refused in one and replayed in the other.
MIN_RSSI_DBM, MAX_RSSI_DBM = -127.0, 20.0


def rssi_in_range(level: float) -> bool:
    return MIN_RSSI_DBM <= level <= MAX_RSSI_DBM


@dataclass(frozen=True, slots=True)
class Advert:
    t: float
    gateway: str
    device: str
    rssi: int


@dataclass(slots=True)
class Recording:
    """Every reception, time-ordered, with the device addresses the gateways look for."""

    adverts: list[Advert] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)  # device -> address on air

    @property
    def gateways(self) -> list[str]:
        return sorted({a.gateway for a in self.adverts})

    @property
    def devices(self) -> list[str]:
        return sorted({a.device for a in self.adverts})

    @property
    def span(self) -> tuple[float, float]:
        if not self.adverts:
            return (0.0, 0.0)
        return (self.adverts[0].t, self.adverts[-1].t)


def _open_text(path: Path) -> io.TextIOBase:
    # utf-8-sig: a byte order mark (Excel's "CSV UTF-8") is not part of the first column.
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
        return io.TextIOWrapper(path.open("rb"), encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from exc


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    with _open_text(path) as fh:
        try:
            reader = csv.DictReader(fh)
            names = list(reader.fieldnames or [])
            missing = [c for c in required if c not in names]
            if missing:
                raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
            # DictReader keeps the last of two same-named columns, silently.
            if twice := sorted({c for c in names if c and names.count(c) > 1}):
                raise InputError(f"{path}: column(s) {', '.join(twice)} given twice")
            for row in reader:
                yield reader.line_num, row
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"{path}: {exc}") from exc


def synthetic_address(device: str) -> str:
    """A stable made-up address for a CSV device (CSV layouts carry no address)."""
    h = _fnv(device)
    octets = [(h >> (8 * i)) & 0xFF for i in range(6)]
    octets[0] = (octets[0] | 0xC0) & 0xFF  # static random address
    return ":".join(f"{o:02X}" for o in octets)


def _fnv(text: str) -> int:
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def read_csv_adverts(path: Path) -> Recording:
    out = Recording()
    for line, row in _rows(path, ("time_s", "gateway", "rssi_dbm")):
        try:
            t = float(row["time_s"])
            level = float(row["rssi_dbm"])
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}:{line}: {exc}") from exc
        gateway = (row.get("gateway") or "").strip()
        device = (row.get("device") or "").strip() or DEFAULT_DEVICE
        if not gateway:
            raise InputError(f"{path}:{line}: empty gateway")
        # NaN and inf too: a clock at inf never ends the replay, round(inf) overflows.
        # The range is checked on the whole dBm a receiver reports, as a trace's is
        # (20.4 reads as 20 in both layouts).
        if not math.isfinite(t) or not math.isfinite(level) or not rssi_in_range(round(level)):
            raise InputError(f"{path}:{line}: time_s or rssi_dbm out of range")
        check_time(t, f"{path}:{line}")
        rssi = round(level)
        out.adverts.append(Advert(t, gateway, device, rssi))
        if device not in out.addresses:
            out.addresses[device] = synthetic_address(device)
    out.adverts.sort(key=lambda a: a.t)
    return out


def read_trace_adverts(
    node: str,
    path: Path,
    names: Mapping[str, str] | None = None,
    matched: set[str] | None = None,
) -> Recording:
    """One gateway's monitor trace; ``names`` maps a device name to an address (on air,
    or the Device's identity address a recording names), and the names it matched are
    added to ``matched``.

    A line of ``--record`` names its Device (``device``, and ``identity`` when the
    address on air is a rotating one): its adverts are that device's, under its
    identity address, whatever address it was heard on. A line without (a plain trace,
    or a recording older than the fields) is the device of its address."""
    by_address = {a.upper(): n for n, a in (names or {}).items()}
    out = Recording()
    try:
        fh = _open_text(path)
        with fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                rec = parse_line(line, where)
                check_time(rec.t, where, "t")
                if not rssi_in_range(rec.rssi):
                    raise InputError(
                        f"{where}: rssi {rec.rssi} is out of range"
                        f" ({MIN_RSSI_DBM:.0f}..+{MAX_RSSI_DBM:.0f} dBm)"
                    )
                address, recorded = rec.address, None
                if '"device"' in line:
                    recorded, address = _recorded_device(line, where, address)
                name = by_address.get(rec.address) or by_address.get(address)
                if name is not None and matched is not None:
                    matched.add(name)
                device = name or recorded or address.lower().replace(":", "")
                out.adverts.append(Advert(rec.t, node, device, rec.rssi))
                out.addresses.setdefault(device, address)
    except (TraceError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise InputError(str(exc)) from exc
    out.adverts.sort(key=lambda a: a.t)
    return out


def _recorded_device(line: str, where: str, address: str) -> tuple[str, str]:
    """The Device a ``--record`` line names and its identity address (``address`` when
    the line has none: the Device was on air under its own)."""
    obj = json.loads(line)  # parse_line read it already
    device, identity = obj.get("device"), obj.get("identity", address)
    if not isinstance(device, str) or not device.strip():
        raise TraceError(f"{where}: device {device!r} is not a Device name")
    if not isinstance(identity, str) or not ADDRESS.fullmatch(identity.upper()):
        raise TraceError(f"{where}: identity {identity!r} is not a Bluetooth address")
    return device.strip(), identity.upper()


# The chain's clock ticks through every second of a recording's span (the writer's pass
# every 0.5 s, quiet or not): a day costs ~8 s, so 31 days is a few minutes. Beyond it,
# almost always epoch timestamps (traces, --record) mixed with seconds from zero (CSV).
MAX_SPAN_S = 31 * 86400.0


def check_span(parts: Mapping[str, Recording]) -> None:
    """Refuse inputs whose adverts span more than MAX_SPAN_S, naming the inputs at
    both ends; the replay would otherwise run for hours or forever."""
    spans = {name: r.span for name, r in parts.items() if r.adverts}
    if not spans:
        return
    first = min(spans, key=lambda n: spans[n][0])
    last = max(spans, key=lambda n: spans[n][1])
    start, end = spans[first][0], spans[last][1]
    if end - start <= MAX_SPAN_S:
        return
    hint = ""
    if first != last and start < 1e8 <= end:
        hint = (
            "; one input counts seconds from zero and another epoch seconds:"
            " shift one onto the other's clock"
        )
    raise InputError(
        f"the adverts span {end - start:.4g} s, from t={start:.6g} in {first}"
        f" to t={end:.6g} in {last}; replay takes at most {MAX_SPAN_S / 86400:.0f} days{hint}"
    )


# One gateway hears one device every fraction of a second (the recordings here: a median
# 0.05-0.2 s), and BLE advertises at least every 10.24 s. A median gap past that is a
# recording in milliseconds (adverts >= 20 ms apart) read as seconds: short enough to pass
# the span check, it replays with every time x1000. Fewer gaps than MIN_GAPS say nothing.
MAX_MEDIAN_GAP_S = 10.24
MIN_GAPS = 20


def median_gap(recording: Recording) -> float | None:
    """The median time between two adverts of the same gateway and device; None when
    there are fewer than MIN_GAPS such gaps."""
    last: dict[tuple[str, str], float] = {}
    gaps: list[float] = []
    for a in recording.adverts:  # time-ordered
        key = (a.gateway, a.device)
        if key in last:
            gaps.append(a.t - last[key])
        last[key] = a.t
    if len(gaps) < MIN_GAPS:
        return None
    gaps.sort()
    return gaps[len(gaps) // 2]


def check_units(parts: Mapping[str, Recording]) -> None:
    """Refuse an input whose adverts are too far apart to be seconds, naming it. For CSV
    recordings (all gateways pooled): one gateway's trace, far from the device, may
    rightly hear it rarely."""
    for name, recording in parts.items():
        gap = median_gap(recording)
        if gap is not None and gap > MAX_MEDIAN_GAP_S:
            raise InputError(
                f"{name}: a gateway hears a device every {gap:.4g} s (median), but BLE"
                f" advertises at least every {MAX_MEDIAN_GAP_S} s: times in milliseconds?"
                " replay reads seconds"
            )


def merge(recordings: list[Recording]) -> Recording:
    out = Recording()
    for r in recordings:
        out.adverts.extend(r.adverts)
        for device, address in r.addresses.items():
            if out.addresses.setdefault(device, address) != address:
                raise InputError(
                    f"device {device} has two addresses: {address}, {out.addresses[device]}"
                )
    out.adverts.sort(key=lambda a: a.t)
    return out


def read_truth(path: Path) -> dict[str, list[tuple[float, str]]]:
    """device -> time-ordered (t, nearest gateway) samples."""
    out: dict[str, list[tuple[float, str]]] = {}
    for line, row in _rows(path, ("time_s", "nearest_gateway")):
        try:
            t = float(row["time_s"])
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}:{line}: {exc}") from exc
        if not math.isfinite(t):
            raise InputError(f"{path}:{line}: time_s out of range")
        check_time(t, f"{path}:{line}")
        gw = (row.get("nearest_gateway") or "").strip()
        if not gw:
            continue  # no truth at this time
        device = (row.get("device") or "").strip() or DEFAULT_DEVICE
        out.setdefault(device, []).append((t, gw))
    for samples in out.values():
        samples.sort()
    return out


def check_truth(
    truth: Mapping[str, list[tuple[float, str]]], recording: Recording, path: Path
) -> None:
    """Refuse truth that names a gateway or device no recording has (scored as is, every
    sample would count as a wrong pick and the table would blame the decision), or
    that mostly falls outside the recordings' span (another clock)."""
    gateways, devices = set(recording.gateways), set(recording.devices)
    if unknown := sorted(d for d in truth if d not in devices):
        raise InputError(
            f"{path}: device(s) {', '.join(unknown)} not in the recordings"
            f" ({', '.join(sorted(devices))})"
        )
    named = {gw for samples in truth.values() for _t, gw in samples}
    if unknown := sorted(named - gateways):
        raise InputError(
            f"{path}: gateway(s) {', '.join(unknown)} not in the recordings"
            f" ({', '.join(sorted(gateways))})"
        )
    _check_truth_overlap(truth, recording, path)


# At least this share of the truth's samples must fall inside the recordings' span.
TRUTH_OVERLAP = 0.5


def _clock_hint(first: float, start: float) -> str:
    """A hint when one series is in epoch seconds and the other counts from zero."""
    if (first >= 1e8) == (start >= 1e8):
        return ""
    return (
        "; one counts seconds from zero and the other epoch seconds:"
        " shift one onto the other's clock"
    )


def _check_truth_overlap(
    truth: Mapping[str, list[tuple[float, str]]], recording: Recording, path: Path
) -> None:
    """Refuse truth on another clock than the recordings (epoch against seconds from
    zero, or another day): scored as is, its samples all fall after (or before) every
    decision and the table shows believable, meaningless numbers."""
    times = [t for samples in truth.values() for t, _gw in samples]
    if not times or not recording.adverts:
        return
    start, end = recording.span
    inside = sum(1 for t in times if start <= t <= end)
    if inside >= TRUTH_OVERLAP * len(times):
        return
    first, last = min(times), max(times)
    hint = _clock_hint(first, start)
    raise InputError(
        f"{path}: {inside} of {len(times)} truth samples fall inside the recordings"
        f" (truth t={first:.6g}..{last:.6g}, recordings t={start:.6g}..{end:.6g});"
        f" at least {TRUTH_OVERLAP:.0%} must{hint}"
    )


def read_load(path: Path) -> dict[str, list[tuple[float, float | None, float | None]]]:
    """A load series: CSV ``time_s``, ``node``, ``cpu`` and optionally ``memory``
    (utilisation 0..1, as the extender's Prometheus queries give it; empty: unknown).
    node -> time-ordered (t, cpu, memory)."""
    out: dict[str, list[tuple[float, float | None, float | None]]] = {}
    for line, row in _rows(path, ("time_s", "node", "cpu")):
        node = (row.get("node") or "").strip()
        if not node:
            raise InputError(f"{path}:{line}: empty node")
        try:
            t = float(row["time_s"])
            cpu, mem = (
                float(v) if (v := (row.get(k) or "").strip()) else None for k in ("cpu", "memory")
            )
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}:{line}: {exc}") from exc
        if not math.isfinite(t) or any(v is not None and not 0.0 <= v <= 1.0 for v in (cpu, mem)):
            raise InputError(f"{path}:{line}: time_s, cpu or memory out of range (0..1)")
        check_time(t, f"{path}:{line}")
        out.setdefault(node, []).append((t, cpu, mem))
    for samples in out.values():
        samples.sort(key=lambda s: s[0])
    return out


def check_load(load: Mapping[str, object], nodes: Iterable[str], path: Path) -> None:
    """Refuse load rows for a node the replay does not have (neither a recording's
    gateway nor a --node): as truth's, they would be read and never used."""
    known = set(nodes)
    if unknown := sorted(n for n in load if n not in known):
        raise InputError(
            f"{path}: node(s) {', '.join(unknown)} in neither the recordings nor --node"
            f" ({', '.join(sorted(known))})"
        )


def check_load_overlap(
    load: Mapping[str, list[tuple[float, float | None, float | None]]],
    recording: Recording,
    path: Path,
    max_age: float = 0.0,
) -> None:
    """Refuse a load series none of whose samples is read during the recordings' span
    (another clock: epoch against seconds from zero): all after the decisions, none is
    ever read; all long before, the last is stale (older than the policy's `max_age`,
    loadMaxAge) from the start; the report then shows the figures of no load at all. A
    sample shortly before the start is read, so a sparse series over a short recording
    passes."""
    times = [t for samples in load.values() for t, _cpu, _mem in samples]
    if not times or not recording.adverts:
        return
    start, end = recording.span
    if any(start - max_age <= t <= end for t in times):
        return
    first, last = min(times), max(times)
    hint = _clock_hint(first, start)
    raise InputError(
        f"{path}: none of {len(times)} load samples falls inside the recordings"
        f" or within loadMaxAge ({max_age:g} s) before them"
        f" (load t={first:.6g}..{last:.6g}, recordings t={start:.6g}..{end:.6g}){hint}"
    )
