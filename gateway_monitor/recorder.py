"""``--record FILE``: what this gateway heard of its Devices, for ``cloud4iot replay``.

Lines are the trace format (``gateway_monitor/traces.py``) with ``t`` in wall-clock
epoch seconds, so the recordings of several gateways line up on one timeline:
``cloud4iot replay --trace gw-a=a.jsonl --trace gw-b=b.jsonl``. Only adverts of
registered Devices are recorded (strangers are never tracked, so never written), each
with two fields the trace format does not have (readers of traces ignore them):
``device``, the Device the monitor resolved the advert to, and, when the address on
air is not the Device's ``spec.address`` (a resolvable private address of a Device
with an identity key, rotated every few minutes), ``identity``, that spec.address.
Replay groups by them, so a wearable is one device across its rotations.

Bounded: when FILE would pass ``max_bytes`` it is renamed FILE.1 (replacing an older
FILE.1) and a new FILE started, so a recorder left on holds at most twice
``max_bytes`` (a flush larger than the room left is split across the rotation). The
event loop never writes: adverts are queued (at most ``max_pending`` lines, the excess
dropped and counted) and a task takes them on the loop and writes them in a thread
every second. A write that fails (a full disk) loses that second's lines, not the
file: it is cut back to its last whole line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0


@dataclass(slots=True)
class Recorder:
    path: Path
    max_bytes: int = 50_000_000
    max_pending: int = 100_000
    pending: list[str] = field(default_factory=list)
    dropped: int = 0
    written: int = 0
    rotations: int = 0

    def __post_init__(self) -> None:
        if self.max_bytes < 1024:
            raise ValueError("--record-max-bytes must be at least 1024")

    def add(
        self,
        t: float,
        address: str,
        rssi: int,
        device: str | None = None,
        identity: str | None = None,
    ) -> None:
        """Queue one advert (wall-clock ``t``) of Device ``device`` (``identity``: its
        spec.address, when not ``address``); cheap, called on the event loop."""
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        # TraceRecord.to_json's fields and layout, and the Device's.
        obj: dict[str, object] = {"t": round(t, 3), "address": address, "rssi": rssi}
        if device is not None:
            obj["device"] = device
        if identity is not None and identity != address:
            obj["identity"] = identity
        self.pending.append(json.dumps(obj, separators=(",", ":")) + "\n")

    def take(self) -> list[str]:
        """What is queued, for `write`: on the event loop, as `add` is. Swapped in a
        thread instead, an `add` between its read of `pending` and its append put the
        line in a list nobody read again (found in review, 2026-12-07)."""
        lines, self.pending = self.pending, []
        return lines

    def flush(self) -> int:
        """`take` and `write` at once (a caller with no event loop)."""
        return self.write(self.take())

    def write(self, lines: list[str]) -> int:
        """Write `lines`, rotating whenever the file would grow past the bound (a batch
        larger than the room left is split: FILE never holds more than max_bytes).
        Blocking: run it in a thread. Returns the lines written."""
        if not lines:
            return 0
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        chunk: list[bytes] = []
        chunk_bytes = 0
        for line in lines:
            data = line.encode()
            if size + chunk_bytes + len(data) > self.max_bytes and (size or chunk):
                self._append(chunk)
                self._rotate()
                size, chunk, chunk_bytes = 0, [], 0
            chunk.append(data)
            chunk_bytes += len(data)
        self._append(chunk)
        self.written += len(lines)
        return len(lines)

    def _append(self, chunk: list[bytes]) -> None:
        """Append whole lines or nothing: a write that fails part way (a full disk) is
        cut back to where it began, and a file that does not end in a newline (torn
        by a crash, or a cut that failed) gets one first, so later lines stay lines
        (a torn line in mid-file made replay refuse the whole recording)."""
        if not chunk:
            return
        data = b"".join(chunk)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.fstat(fd).st_size
            if start and os.pread(fd, 1, start - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        if self.path.exists():
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self.rotations += 1
            log.info("recording rotated: %s -> %s.1", self.path, self.path.name)
