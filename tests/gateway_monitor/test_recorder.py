"""`--record FILE`: the monitor writes what `cloud4iot replay` reads, bounded and rotated."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import synthetic_traces
from gateway_monitor import traces
from gateway_monitor.app import running
from gateway_monitor.cli import build_parser, settings_from_args
from gateway_monitor.recorder import Recorder
from gateway_monitor.scanner import ReplaySource
from gateway_monitor.tracker import ConfigError

ADDR = "C0:FF:EE:00:00:01"


def test_rotates_at_the_bound_and_keeps_one_old_file(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "gw.jsonl", max_bytes=2048)
    for second in range(200):
        rec.add(1_700_000_000.0 + second, ADDR, -60)
        rec.flush()
    assert rec.rotations > 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["gw.jsonl", "gw.jsonl.1"]
    assert all(p.stat().st_size <= 2048 for p in tmp_path.iterdir())
    # Nothing lost but what rotated out twice: the newest lines are all there, in order.
    lines = (tmp_path / "gw.jsonl.1").read_text().splitlines() + (
        tmp_path / "gw.jsonl"
    ).read_text().splitlines()
    ts = [json.loads(line)["t"] for line in lines]
    assert ts == sorted(ts)
    assert ts[-1] == 1_700_000_199.0


def test_queue_is_bounded_and_counts_what_it_dropped(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "gw.jsonl", max_pending=3)
    for i in range(5):
        rec.add(float(i), ADDR, -60)
    assert (rec.flush(), rec.dropped) == (3, 2)
    with pytest.raises(ValueError, match="at least 1024"):
        Recorder(tmp_path / "x", max_bytes=10)


def test_settings_refuse_a_tiny_bound(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["--node", "gw1", "--dry-run", "--device", f"p={ADDR}", "--record", str(tmp_path / "r"),
         "--record-max-bytes", "100"]
    )  # fmt: skip
    with pytest.raises(ConfigError, match="record-max-bytes"):
        settings_from_args(args)


async def test_two_recorded_gateways_replay_to_one_handover(tmp_path: Path) -> None:
    """Live monitors (sped-up trace replay) record; `cloud4iot replay` reads the records
    and hands the walk over once, and the stranger was never written."""
    gw1_trace, gw2_trace = synthetic_traces.walk(ADDR, [0.0, 20.0], duration=150.0, seed=7)
    stranger = synthetic_traces.stationary("DE:AD:BE:EF:00:01", -50.0, duration=150.0, seed=9)
    traces.write_trace(tmp_path / "gw1.jsonl", sorted(gw1_trace + stranger, key=lambda r: r.t))
    traces.write_trace(tmp_path / "gw2.jsonl", gw2_trace)

    def settings(node: str) -> object:
        args = build_parser().parse_args(
            ["--node", node, "--replay", str(tmp_path / f"{node}.jsonl"), "--speed", "100",
             "--dry-run", "--device", f"patient-1={ADDR}", "--record", str(tmp_path / f"rec-{node}.jsonl")]
        )  # fmt: skip
        return settings_from_args(args)

    async with running(settings("gw1")) as gw1, running(settings("gw2")) as gw2:  # type: ignore[arg-type]
        for gw in (gw1, gw2):
            assert isinstance(gw.source, ReplaySource)
            await asyncio.wait_for(gw.source.finished.wait(), 15)
    rec1 = traces.read_trace(tmp_path / "rec-gw1.jsonl")
    rec2 = traces.read_trace(tmp_path / "rec-gw2.jsonl")
    assert {r.address for r in rec1 + rec2} == {ADDR}
    assert len(rec1) == len(gw1_trace)
    assert len(rec2) == len(gw2_trace)
    # At the trace's own pace, anchored to the wall clock: 150 s of walk, not 1.5 s.
    assert rec1[-1].t - rec1[0].t > 140

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from extender.cli import main; sys.exit(main())",
        "replay", "--trace", f"gw1={tmp_path / 'rec-gw1.jsonl'}",
        "--trace", f"gw2={tmp_path / 'rec-gw2.jsonl'}", "--device", f"patient-1={ADDR}",
        "-o", "json", "--no-baselines", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    doc = json.loads(out)
    assert doc["devices"]["patient-1"]["policy"]["changes"] == 1


async def test_no_line_is_lost_while_a_write_runs_in_its_thread(tmp_path: Path) -> None:
    """The live loop's way: `take` on the event loop, `write` in a thread, with adverts
    added meanwhile. (The list used to be swapped in the thread: an `add` racing it put
    its line in a list nobody read again.)"""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # thread switches as often as a busy gateway's
    try:
        rec = Recorder(tmp_path / "gw.jsonl")
        added = 0
        for _ in range(20):
            writing = asyncio.create_task(asyncio.to_thread(rec.write, rec.take()))
            while not writing.done():
                for _ in range(200):
                    rec.add(1_700_000_000 + added * 0.001, "C0:FF:EE:00:00:01", -60)
                    added += 1
                await asyncio.sleep(0)
            await writing
        rec.flush()
    finally:
        sys.setswitchinterval(previous)
    on_disk = sum(1 for _ in (tmp_path / "gw.jsonl").open())
    assert added > 4000
    assert (on_disk, rec.dropped) == (added, 0)


def test_a_flush_larger_than_the_bound_is_split_across_the_rotation(tmp_path: Path) -> None:
    """FILE never holds more than max_bytes, even when one second of adverts is larger."""
    rec = Recorder(tmp_path / "gw.jsonl", max_bytes=1024)
    for i in range(40):  # ~60 bytes a line: ~2,400 bytes in one flush
        rec.add(1_700_000_000 + i, ADDR, -60)
    assert rec.flush() == 40
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    assert set(sizes) == {"gw.jsonl", "gw.jsonl.1"}
    assert max(sizes.values()) <= 1024
    assert rec.rotations == 2  # (the first part went to FILE.1 and was replaced)
    lines = (tmp_path / "gw.jsonl.1").read_text().splitlines()
    lines += (tmp_path / "gw.jsonl").read_text().splitlines()
    assert [json.loads(line)["t"] for line in lines] == sorted(
        json.loads(line)["t"] for line in lines
    )


@contextlib.contextmanager
def _disk_full_past(size: int) -> Iterator[None]:
    """Writes past ``size`` bytes fail as on a full disk, part of the data landing first
    (RLIMIT_FSIZE: a short write, then EFBIG; no tmpfs mount needed)."""
    resource = pytest.importorskip("resource")
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_failed_write_leaves_no_torn_line(tmp_path: Path) -> None:
    """A write that fails part way is cut back: the file the recorder goes on writing
    to stays whole lines, and replay reads it (a torn line in mid-file made it refuse
    the whole recording)."""
    from replay.inputs import read_trace_adverts

    path = tmp_path / "gw.jsonl"
    rec = Recorder(path)
    for i in range(10):
        rec.add(1_700_000_000 + i, ADDR, -60)
    rec.flush()
    size = path.stat().st_size
    for i in range(10, 20):
        rec.add(1_700_000_000 + i, ADDR, -60)
    with _disk_full_past(size + 100), pytest.raises(OSError, match="too large"):
        rec.flush()  # ~1.5 lines of the 10 fit
    assert path.read_bytes().count(b"\n") == 10
    assert path.stat().st_size == size
    for i in range(20, 30):  # space freed; the monitor goes on
        rec.add(1_700_000_000 + i, ADDR, -60)
    rec.flush()
    ts = [r.t for r in traces.read_trace(path)]
    assert ts == [1_700_000_000 + i for i in (*range(10), *range(20, 30))]
    assert len(read_trace_adverts("gw", path).adverts) == 20


def test_a_file_torn_before_starts_a_new_line(tmp_path: Path) -> None:
    """A file that does not end in a newline (a crash mid-write, or a cut that failed):
    the next lines start on a line of their own, so only the torn line is bad."""
    path = tmp_path / "gw.jsonl"
    path.write_text('{"t":1700000000.0,"address":"C0:FF:EE:00:00:01","rssi":-6')
    rec = Recorder(path)
    rec.add(1_700_000_001, ADDR, -60)
    rec.flush()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert traces.parse_line(lines[1]).t == 1_700_000_001
