"""The batches waiting for the cloud, in an append-only checksummed log on the gateway's disk.

Layout under ``QUEUE_DIR`` (a hostPath per device on the gateway's local disk)::

    QUEUE_DIR/<instance>/lock        flock(LOCK_EX) held for the life of the process
    QUEUE_DIR/<instance>/owner.json  who and since when (for people, and the adoption order)
    QUEUE_DIR/<instance>/log         the records

Each process writes only its own directory (``<instance>`` is the random boot id in its
batch ids). At start it adopts the directories of dead owners: one whose ``lock`` it can
take belongs to a process that is gone (the kernel drops a flock with its holder, kill -9
included), so a restarted container, or a new pod on the same gateway, picks up what a
crashed one left, keeping every batch's id, sequence and order, within the queue's bounds.
A directory whose lock this uid cannot open (another uid's) is reported, not taken for a
live owner; an adopted one it cannot delete is renamed hidden so it is not adopted again.

A record is ``length (4 bytes, big endian) | CRC32 of the payload (4) | payload``; the
payload is ``B`` + a JSON header + ``\\n`` + the batch's body (a batch waiting), or ``D`` +
JSON ``{"id", "why"}`` (a batch done with: sent, rejected, dropped, handed over). Reading
stops at the first torn or corrupt record: a crash can only tear the tail, as records are
only ever appended. A corrupt record in the middle (a failing disk) keeps a copy of the
whole log beside the directory for an admin, and what precedes it is recovered; so does a
damaged length that seems to run past the end while whole records follow it.

Durability (``QUEUE_FSYNC``): ``group`` (default) writes each record at once (a kill -9
loses nothing written) and fsyncs in a worker thread, one fsync covering every record
written while the previous one ran, so power loss costs at most the records of one fsync
in progress; ``batch`` fsyncs every record before ``append`` returns (blocking the event
loop for the fsync); ``none`` leaves it to the kernel's writeback (power loss can cost its
last seconds). The log is rewritten with only what still waits (write, fsync, rename,
fsync the directory) once done records outweigh waiting ones by 1 MiB, so it stays
bounded by the queue's bounds.

Bounds: ``max_batches`` and ``max_bytes`` (bodies) over the waiting batches, plus the one
in flight. Past either, the oldest waiting batch that is not an alert is dropped (the oldest
alert only when only alerts wait), counted and logged; the batch in flight never is.

A write or fsync that fails (the gateway's disk full, an I/O error) does not stop the
queue, nor escape ``append`` or end the fsync task unseen: the log is cut back to its last
whole record (so it never holds a torn record in the middle), the queue goes on in memory
with the same bounds, and the log is "behind" (logged once, gauge
``queue_log_behind``, counter ``queue_write_failures_total``). At most every
``RESYNC_SECONDS``, on the next change, and at close, the log is rewritten with what waits
(as a compaction does); once that succeeds it is whole again. Until then a crash loses the
batches queued since the failure, and may re-send some already sent (same ids: the ingest
drops them). Logs adopted while behind are kept, their locks held, until the log catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import struct
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from omh_consolidator.metrics import Metrics

log = logging.getLogger(__name__)

FsyncPolicy = Literal["group", "batch", "none"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("group", "batch", "none")
FRAME = struct.Struct(">II")  # payload length, CRC32 of the payload
MAX_RECORD = 64 * 1024 * 1024  # a length past this is corruption, not a batch
COMPACT_SLACK = 1024 * 1024
HANDED_BASE = -(1 << 40)  # positions of handed-over batches: before any own batch
RESYNC_SECONDS = 5.0  # a log behind (write failed): how often to try rewriting it
_RECORD_KIND = re.compile(b"[BD]")  # the first byte of a record's payload


@dataclass(frozen=True, slots=True)
class Batch:
    sequence: int
    batch_id: str
    kind: str  # "summary" | "alert" | "reading"
    body: bytes
    data_points: int


class CorruptLogError(ValueError):
    pass


def encode_batch(batch: Batch, pos: int) -> bytes:
    head = {
        "id": batch.batch_id,
        "seq": batch.sequence,
        "kind": batch.kind,
        "n": batch.data_points,
        "pos": pos,
    }
    return _frame(b"B" + json.dumps(head, separators=(",", ":")).encode() + b"\n" + batch.body)


def encode_done(batch_id: str, why: str) -> bytes:
    return _frame(b"D" + json.dumps({"id": batch_id, "why": why}, separators=(",", ":")).encode())


def _frame(payload: bytes) -> bytes:
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(slots=True)
class Record:
    end: int  # offset just past this record
    batch: Batch | None  # a batch waiting, or
    pos: int
    done: str | None  # the id of a batch done with


def records(data: bytes, *, strict: bool = False) -> Iterator[Record]:
    """The records of ``data`` up to the first torn one. ``strict`` (bytes from a peer,
    not a log): a torn or corrupt record raises CorruptLogError. Otherwise a corrupt one (its
    length fits but its checksum or content does not) raises CorruptLogError after the good
    ones, and a torn tail just ends the iteration. A record that runs past the end with a
    whole record somewhere after its start is not a torn tail but a damaged length (a crash
    tears only the last append): CorruptLogError too."""
    offset = 0
    while offset < len(data):
        if len(data) - offset < FRAME.size:
            if strict:
                raise CorruptLogError(f"torn record header at byte {offset}")
            return
        length, crc = FRAME.unpack_from(data, offset)
        start = offset + FRAME.size
        if length > MAX_RECORD:
            raise CorruptLogError(f"record length {length} at byte {offset}")
        if start + length > len(data):
            if strict:
                raise CorruptLogError(f"torn record at byte {offset}")
            later = _next_frame(data, offset + 1)
            if later is not None:
                raise CorruptLogError(
                    f"record length {length} at byte {offset} runs past the end of the log,"
                    f" but a whole record starts at byte {later}"
                )
            return  # torn by a crash while appending
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            raise CorruptLogError(f"checksum mismatch at byte {offset}")
        offset = start + length
        yield _decode(payload, offset)


def _next_frame(data: bytes, offset: int) -> int | None:
    """The offset of the first whole, checksummed record at or after ``offset``."""
    for kind in _RECORD_KIND.finditer(data, offset + FRAME.size):  # a payload's first byte
        start = kind.start()
        length, crc = FRAME.unpack_from(data, start - FRAME.size)
        fits = length <= MAX_RECORD and start + length <= len(data)
        if fits and zlib.crc32(data[start : start + length]) == crc:
            return start - FRAME.size
    return None


def _decode(payload: bytes, end: int) -> Record:
    try:
        if payload[:1] == b"B":
            head_raw, body = payload[1:].split(b"\n", 1)
            head = json.loads(head_raw)
            batch = Batch(
                int(head["seq"]), str(head["id"]), str(head["kind"]), body, int(head["n"])
            )
            return Record(end, batch, int(head["pos"]), None)
        if payload[:1] == b"D":
            return Record(end, None, 0, str(json.loads(payload[1:])["id"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptLogError(f"bad record before byte {end}: {exc}") from None
    raise CorruptLogError(f"unknown record type {payload[:1]!r} before byte {end}")


def replay(data: bytes) -> tuple[list[tuple[int, Batch]], int, str | None]:
    """The batches still waiting in a log, by position; the length of its good prefix;
    the reason it stopped early if a record was corrupt."""
    waiting: dict[str, tuple[int, Batch]] = {}
    good = 0
    error: str | None = None
    try:
        for rec in records(data):
            if rec.batch is not None:
                waiting[rec.batch.batch_id] = (rec.pos, rec.batch)
            elif rec.done is not None:
                waiting.pop(rec.done, None)
            good = rec.end
    except CorruptLogError as exc:
        error = str(exc)
    return sorted(waiting.values(), key=lambda pb: pb[0]), good, error


@dataclass(slots=True)
class _Entry:
    pos: int
    batch: Batch


class BatchQueue:
    """Waiting batches, in memory and (with ``directory``) in this process's log."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        max_batches: int = 1440,
        max_bytes: int = 16 * 1024 * 1024,
        fsync: FsyncPolicy = "group",
        directory: Path | None = None,
    ) -> None:
        if max_batches < 1 or max_bytes < 1:
            raise ValueError(f"queue bounds must be >= 1, got {max_batches}, {max_bytes}")
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy {fsync!r}: use one of {', '.join(FSYNC_POLICIES)}")
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.directory = directory
        self._metrics = metrics
        self._waiting: deque[_Entry] = deque()
        self._ids: set[str] = set()
        self._inflight: _Entry | None = None
        self._bytes = 0
        self._next_pos = 0  # own batches: 0, 1, ...
        self._handed = 0  # handed-over ones: HANDED_BASE, HANDED_BASE + 1, ...
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._log_bytes = 0
        self._dirty = False
        self._bulk = False  # adopting: one fsync at the end, not one per record
        self._flusher: asyncio.Task[None] | None = None
        self._compact_pending = False  # a compaction waited for the fsync in progress
        self._syncing = 0  # sync() calls fsyncing the current file in a thread
        self._behind_since: float | None = None  # a write failed: the log misses records
        self._next_resync = 0.0
        self._adopted_dirs: list[tuple[Path, int]] = []  # removed once our log holds them
        self.changed = asyncio.Event()  # set whenever a batch becomes waiting

    # -- opening, adopting, closing ---------------------------------------------------

    @classmethod
    def open(
        cls,
        root: Path,
        instance: str,
        metrics: Metrics,
        *,
        max_batches: int = 1440,
        max_bytes: int = 16 * 1024 * 1024,
        fsync: FsyncPolicy = "group",
    ) -> BatchQueue:
        """This process's log under ``root``, with what dead owners left adopted into it.
        Blocking file I/O: call it before serving, or in a thread."""
        root.mkdir(parents=True, exist_ok=True)
        fresh = root / f".{instance}.new"
        fresh.mkdir()
        lock_fd = os.open(fresh / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        owner = {"instance": instance, "pid": os.getpid(), "started": time.time()}
        (fresh / "owner.json").write_text(json.dumps(owner))
        home = root / instance
        fresh.rename(home)  # visible to others only once locked
        _fsync_dir(root)
        q = cls(metrics, max_batches=max_batches, max_bytes=max_bytes, fsync=fsync, directory=home)
        q._lock_fd = lock_fd
        q._fd = os.open(home / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        q._adopt_dead(root)
        return q

    def _adopt_dead(self, root: Path) -> None:
        assert self.directory is not None
        assert self._fd is not None
        dead: list[tuple[float, Path, int]] = []
        for d in root.iterdir():
            if d == self.directory or d.name.startswith(".") or not d.is_dir():
                continue
            try:
                lock = _try_lock(d / "lock")
            except OSError as exc:  # another uid's (an admin's run as root, an older image)
                self._metrics.inc("queue_unreadable_logs_total")
                log.error(
                    "cannot lock the queue directory %s (%s; owned by uid %s, this process"
                    " runs as uid %d): what it holds is left for an admin (chown it to this"
                    " uid for a later start to adopt it)",
                    d,
                    exc.strerror or exc,
                    _owner(d),
                    os.geteuid(),
                )
                continue
            if lock is None:
                continue  # its owner is alive
            try:
                started = float(json.loads((d / "owner.json").read_text())["started"])
            except (OSError, ValueError, KeyError, TypeError):
                try:
                    started = d.stat().st_mtime
                except OSError:
                    started = 0.0  # oldest first: its log is read, or skipped, below
            dead.append((started, d, lock))
        dead.sort(key=lambda t: t[0])
        adopted = 0
        seen: set[str] = set()  # every id adopted, the ones the bounds dropped since too
        taken: list[tuple[Path, int]] = []  # removed once our log holds what they had
        self._bulk = True
        for _, d, lock in dead:
            try:
                data = (d / "log").read_bytes()
            except FileNotFoundError:
                data = b""
            except OSError as exc:  # a failing disk: this one stays, the others are adopted
                os.close(lock)
                self._metrics.inc("queue_unreadable_logs_total")
                log.error(
                    "cannot read the queue log of dead owner %s (%s): left where it is for a"
                    " later start or an admin",
                    d.name,
                    exc,
                )
                continue
            waiting, good, error = replay(data)
            if error is not None:
                self._metrics.inc("queue_corrupt_logs_total")
                keep = d.parent / f"corrupt-{d.name}-{int(time.time())}.log"
                try:
                    keep.write_bytes(data)
                except OSError as exc:
                    keep = d  # no copy: the whole directory stays instead
                    log.error("copying the corrupt queue log of %s aside: %s", d.name, exc)
                log.error(
                    "the queue log of %s is corrupt after byte %d (%s): recovered what precedes"
                    " it; the whole log is kept in %s",
                    d.name,
                    good,
                    error,
                    keep,
                )
                if keep == d:
                    os.close(lock)
                else:
                    taken.append((d, lock))
            else:
                taken.append((d, lock))
            for _, batch in waiting:
                if batch.batch_id in seen or batch.batch_id in self._ids:
                    continue  # adopted twice (a crash between adopting and removing)
                seen.add(batch.batch_id)
                self._push_back(batch)
                adopted += 1
            if waiting:
                log.info("adopted %d waiting batches from dead owner %s", len(waiting), d.name)
            # Per owner, not once at the end: memory stays within the bounds plus one log,
            # and, owners being adopted oldest first, the oldest summaries go first.
            self._enforce_bounds()
        self._bulk = False
        if adopted:
            self._metrics.inc("queue_adopted_batches_total", adopted)
        self._adopted_dirs = taken
        if not self.behind:
            try:
                os.fsync(self._fd)  # ours before theirs go
            except OSError as exc:
                self._fall_behind(exc)
        self._release_adopted()
        self._gauges()

    def _release_adopted(self) -> None:
        """Remove the adopted logs once ours holds what they had (kept while behind)."""
        if self.behind or not self._adopted_dirs:
            return
        for d, lock in self._adopted_dirs:
            _retire(d, self._metrics)
            os.close(lock)
        with contextlib.suppress(OSError):
            _fsync_dir(self._adopted_dirs[0][0].parent)
        self._adopted_dirs = []

    def close(self) -> None:
        """Stop writing: what waits stays in the log for the next owner (a restarted
        container, or a later pod on this gateway) to adopt."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._fd is not None:
            if self.behind:
                self._resync()  # a last chance to leave what waits on disk
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        if self.behind:
            log.error(
                "closing with the queue log behind: %d waiting batches are not all on disk",
                len(self),
            )
        elif self.directory is not None and not self._waiting and self._inflight is None:
            shutil.rmtree(self.directory, ignore_errors=True)  # nothing to adopt
        for _, lock in self._adopted_dirs:  # behind: their logs stay for the next owner
            os.close(lock)
        self._adopted_dirs = []
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the queue -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._waiting) + (self._inflight is not None)

    @property
    def waiting_bytes(self) -> int:
        return self._bytes

    def __contains__(self, batch_id: str) -> bool:
        return batch_id in self._ids

    @property
    def behind(self) -> bool:
        """A write failed and the log does not hold everything that waits."""
        return self._behind_since is not None

    def append(self, batch: Batch) -> None:
        """A new batch, at the back."""
        self._push_back(batch)
        self._enforce_bounds()
        self._catch_up()
        self._gauges()
        self.changed.set()

    def insert_handed(self, batches: Iterable[Batch]) -> int:
        """Batches handed over by a pod leaving: older than this process's own, so in front
        of them, behind batches handed earlier (chunks arrive oldest first) and the one in
        flight. Ids already here are skipped; returns how many were new."""
        new: list[_Entry] = []
        for b in batches:
            if b.batch_id not in self._ids:
                new.append(_Entry(HANDED_BASE + self._handed, b))
                self._handed += 1
                self._ids.add(b.batch_id)
        if not new:
            return 0
        self._write(b"".join(encode_batch(e.batch, e.pos) for e in new))
        at = next((i for i, e in enumerate(self._waiting) if e.pos >= 0), len(self._waiting))
        for e in reversed(new):
            self._waiting.insert(at, e)
            self._bytes += len(e.batch.body)
        self._enforce_bounds()
        self._catch_up()
        self._gauges()
        self.changed.set()
        return len(new)

    def take(self) -> Batch | None:
        """The oldest waiting batch, now in flight (until ``done`` or ``release``)."""
        if self._inflight is None and self._waiting:
            self._inflight = self._waiting.popleft()
        return self._inflight.batch if self._inflight is not None else None

    def release(self) -> None:
        """The batch in flight goes back to the front (its POST was abandoned)."""
        if self._inflight is not None:
            self._waiting.appendleft(self._inflight)
            self._inflight = None

    def waiting(self, limit: int, max_bytes: int) -> list[Batch]:
        """Up to ``limit`` batches from the front (the one in flight first), at least one,
        at most ``max_bytes`` of bodies."""
        out: list[Batch] = []
        size = 0
        for e in self._entries():
            if out and (len(out) >= limit or size + len(e.batch.body) > max_bytes):
                break
            out.append(e.batch)
            size += len(e.batch.body)
        return out

    def done(self, batches: Iterable[Batch], why: str) -> None:
        """Batches done with (sent, rejected, handed over): out of the queue for good."""
        gone = {b.batch_id for b in batches} & self._ids
        if not gone:
            return
        self._write(b"".join(encode_done(i, why) for i in sorted(gone)))
        inflight = self._inflight
        if inflight is not None and gone == {inflight.batch.batch_id}:  # the usual: one sent
            self._bytes -= len(inflight.batch.body)
            self._inflight = None
        else:
            kept = [e for e in self._waiting if e.batch.batch_id not in gone]
            if inflight is not None and inflight.batch.batch_id in gone:
                self._inflight = None
            self._waiting = deque(kept)
            self._bytes = sum(len(e.batch.body) for e in self._entries())
        self._ids -= gone
        self._maybe_compact()
        self._catch_up()
        self._gauges()

    async def sync(self) -> None:
        """Everything written so far is on disk (whatever the policy), or the log is
        ``behind`` (the fsync failed)."""
        if self._fd is not None:
            self._dirty = False
            self._syncing += 1
            try:
                await self._fsync()
            finally:
                self._syncing -= 1
            self._after_fsync()

    # -- internals ---------------------------------------------------------------------

    def _entries(self) -> Iterator[_Entry]:
        if self._inflight is not None:
            yield self._inflight
        yield from self._waiting

    def _push_back(self, batch: Batch) -> None:
        entry = _Entry(self._next_pos, batch)
        self._next_pos += 1
        self._write(encode_batch(batch, entry.pos))
        self._waiting.append(entry)
        self._ids.add(batch.batch_id)
        self._bytes += len(batch.body)

    def _enforce_bounds(self) -> None:
        flying = len(self._inflight.batch.body) if self._inflight is not None else 0
        while self._waiting and (
            len(self._waiting) > self.max_batches or self._bytes - flying > self.max_bytes
        ):
            victim = next((i for i, e in enumerate(self._waiting) if e.batch.kind != "alert"), 0)
            batch = self._waiting[victim].batch
            del self._waiting[victim]
            self._ids.discard(batch.batch_id)
            self._bytes -= len(batch.body)
            self._write(encode_done(batch.batch_id, "dropped"))
            self._metrics.inc("batches_dropped_total", kind=batch.kind)
            self._metrics.inc("batch_bytes_dropped_total", len(batch.body))
            log.warning(
                "queue full (%d batches, %d bytes at most): dropped %s batch %s",
                self.max_batches,
                self.max_bytes,
                batch.kind,
                batch.batch_id,
            )

    def _write(self, data: bytes) -> None:
        if self._fd is None or not data:
            return
        if self.behind:
            return  # the change is in memory; _catch_up rewrites the whole log
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            self._fall_behind(exc)
            return
        self._log_bytes += len(data)
        if self._bulk:
            return
        if self.fsync == "batch":
            self._fsync_now()
        elif self.fsync == "group":
            self._dirty = True
            if self._flusher is None or self._flusher.done():
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # no loop (a tool, a test): sync at once
                    self._dirty = False
                    self._fsync_now()
                else:
                    self._flusher = loop.create_task(self._flush(), name="queue-fsync")

    def _fsync_now(self) -> None:
        """fsync the log in this thread; a failure is a failed write (the log behind)."""
        assert self._fd is not None
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._fall_behind(exc)
            return
        self._metrics.inc("queue_fsyncs_total")

    async def _fsync(self) -> None:
        """fsync the log in a worker thread; a failure is a failed write (the log behind)."""
        if self._fd is None or self.behind:
            return  # behind: what is written is not the log's truth; a resync fsyncs its own
        try:
            await asyncio.to_thread(os.fsync, self._fd)
        except OSError as exc:
            if self._fd is not None:
                self._fall_behind(exc)
            return
        self._metrics.inc("queue_fsyncs_total")

    async def _flush(self) -> None:
        while self._dirty and self._fd is not None:
            self._dirty = False
            await self._fsync()
        self._flusher = None  # done with the file: a rewrite may replace it now
        self._after_fsync()

    def _after_fsync(self) -> None:
        """A compaction (or resync) put off while an fsync ran is done once none runs."""
        if self._compact_pending and not self._fsync_running():
            self._compact_pending = False
            if self.behind:
                self._catch_up()
            else:
                self._maybe_compact()
            self._gauges()

    def _fsync_running(self) -> bool:
        return self._syncing > 0 or (self._flusher is not None and not self._flusher.done())

    def _fall_behind(self, exc: OSError) -> None:
        """A write failed: cut the log back to its last whole record and go on in memory."""
        assert self._fd is not None
        self._metrics.inc("queue_write_failures_total")
        try:
            os.ftruncate(self._fd, self._log_bytes)  # no torn record before later ones
        except OSError as cut:
            log.error("cutting the queue log back after a failed write: %s", cut)
        if self._behind_since is None:
            self._behind_since = time.monotonic()
            log.error(
                "writing the queue log in %s failed (%s): the queue goes on in memory, a crash"
                " now loses what was queued since; rewriting the log every %.0f s",
                self.directory,
                exc,
                RESYNC_SECONDS,
            )
        self._next_resync = time.monotonic() + RESYNC_SECONDS
        self._gauges()

    def _catch_up(self) -> None:
        """After a change to the queue: a log behind is rewritten when its time has come."""
        if self.behind and time.monotonic() >= self._next_resync:
            self._resync()

    def _resync(self) -> None:
        """Behind: rewrite the log with what waits; whole again if that works."""
        if self._rewrite():
            assert self._behind_since is not None
            log.warning(
                "the queue log is whole again after %.0f s behind: %d batches waiting on disk",
                time.monotonic() - self._behind_since,
                len(self),
            )
            self._behind_since = None
            self._release_adopted()
            self._gauges()
        else:
            self._next_resync = time.monotonic() + RESYNC_SECONDS

    def _maybe_compact(self) -> None:
        if self._fd is None or self.directory is None:
            return
        if self.behind or self._log_bytes - self._bytes < self._bytes + COMPACT_SLACK:
            return
        self._rewrite()

    def _rewrite(self) -> bool:
        """Replace the log with only what waits (write, fsync, rename, fsync the directory)."""
        if self._fd is None or self.directory is None:
            return False
        if self._fsync_running():
            self._compact_pending = True  # an fsync of the file runs in a thread: after it
            return False
        live = b"".join(encode_batch(e.batch, e.pos) for e in self._entries())
        tmp = self.directory / "log.tmp"
        fd: int | None = None
        try:
            # The new file's fd becomes the log's: no open after the rename, whose failure
            # (EMFILE) escaped from the fsync task and left self._fd a closed number.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
            _write_all(fd, live)
            os.fsync(fd)
            os.replace(tmp, self.directory / "log")
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self.behind:  # a compaction: the current log is still whole
                log.warning("compacting the queue log failed (%s): it stays as it is", exc)
            self._metrics.inc("queue_write_failures_total")
            return False
        os.close(self._fd)
        self._fd = fd
        with contextlib.suppress(OSError):  # the rename is done: at worst not yet durable
            _fsync_dir(self.directory)
        self._log_bytes = len(live)
        self._metrics.inc("queue_compactions_total")
        return True

    def _gauges(self) -> None:
        self._metrics.set("queue_batches", len(self))
        self._metrics.set("queue_bytes", self._bytes)
        self._metrics.set("queue_log_bytes", self._log_bytes)
        self._metrics.set("queue_log_behind", float(self.behind))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _try_lock(path: Path) -> int | None:
    """An fd holding ``path``'s flock, or None if another process holds it. OSError when
    it cannot be opened at all (another uid's directory or lock): that is no live owner,
    and must not pass for one unseen."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)  # flock needs no write access: a read-only lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def _retire(d: Path, metrics: Metrics) -> None:
    """Remove an adopted directory. Renamed hidden first (a rename needs only the parent
    writable), so a directory another uid owns, whose files this one cannot delete, is not
    adopted and sent again at every start; what stays is logged and counted."""
    hidden = d.with_name(f".adopted-{d.name}")
    try:
        d.rename(hidden)
    except OSError:
        hidden = d
    shutil.rmtree(hidden, ignore_errors=True)
    if not hidden.exists():
        return
    metrics.inc("queue_unremovable_logs_total")
    if hidden == d:
        log.error(
            "cannot remove or rename the adopted queue directory %s (owned by uid %s): a later"
            " start adopts its batches again and sends them twice (same ids)",
            d,
            _owner(d),
        )
    else:
        log.warning(
            "cannot remove the adopted queue directory %s (owned by uid %s): left as %s for"
            " an admin; it is not adopted again",
            d.name,
            _owner(hidden),
            hidden,
        )


def _owner(path: Path) -> str:
    try:
        return str(path.stat().st_uid)
    except OSError:
        return "?"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
