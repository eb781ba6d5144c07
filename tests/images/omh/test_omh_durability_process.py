"""kill -9 of real consolidator processes (tests/images/omh/queue_process.py: the real
queue, forwarder, handover and shutdown) with a real HTTP ingest: nothing queued is lost,
ids and order are kept, and duplicates are only what the ingest drops by Idempotency-Key."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port
from omh_consolidator.handover import CHUNK_BATCHES
from omh_consolidator.queue import replay

from tests.waiting import eventually

DRIVER = Path(__file__).with_name("queue_process.py")


class Ingest:
    def __init__(self) -> None:
        self.down = True
        self.arrivals: list[str] = []  # batch ids as stored, first arrival only
        self.duplicates = 0

    async def handle(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503)
        doc = json.loads(await request.read())
        assert request.headers["Idempotency-Key"] == doc["batch_id"]
        if doc["batch_id"] in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals.append(doc["batch_id"])
        return web.json_response({})


@pytest.fixture
async def ingest() -> AsyncIterator[tuple[Ingest, str]]:
    box = Ingest()
    app = web.Application()
    app.router.add_post("/v1/batches", box.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield box, str(server.make_url("/v1/batches"))
    finally:
        await server.close()


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.instance = ""
        self.last = ""  # the last ``queued`` line

    async def command(self, text: str) -> dict[str, int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()
        self.last = await self.line("queued ")
        return status(self.last)

    async def line(self, prefix: str, within: float = 30) -> str:
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), within)
            if not raw:
                raise AssertionError(f"exited ({await self.proc.wait()}) before {prefix!r}")
            if raw.decode().startswith(prefix):
                return raw.decode().strip()


async def start(url: str, queue_dir: Path, batches: int = 0, **env: Any) -> Proc:
    full = {
        **os.environ,
        "DEVICE_NAME": "patient-42-hr",
        "DEVICE_ADDRESS": "C0:FF:EE:00:00:42",
        "INGEST_URL": url,
        "QUEUE_DIR": str(queue_dir),
        "BATCHES": str(batches),
        "HANDOVER_PORT": "0",
        "DRAIN_SECONDS": "20",
        **{k: str(v) for k, v in env.items()},
    }
    proc = Proc(
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(DRIVER),
            env=full,
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.PIPE,
        )
    )
    proc.last = await proc.line("queued ")
    proc.instance = proc.last.split()[1]
    return proc


async def stop(p: Proc) -> None:
    if p.proc.returncode is None:
        p.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(p.proc.wait(), 30)


def ids(instance: str, n: int) -> list[str]:
    return [f"cloud4iot-omh-consolidator/patient-42-hr/{instance}/{i}" for i in range(1, n + 1)]


async def test_kill_9_with_500_queued_in_a_cloud_outage_loses_nothing(
    ingest: tuple[Ingest, str], tmp_path: Path
) -> None:
    box, url = ingest
    a = await start(url, tmp_path / "gw-a", 500)
    await asyncio.sleep(0.5)  # the forwarder is retrying against the outage
    a.proc.kill()
    assert await a.proc.wait() == -signal.SIGKILL
    b = await start(url, tmp_path / "gw-a")  # the restarted container, same disk
    assert b.proc.returncode is None
    box.down = False
    await eventually(lambda: len(box.arrivals) == 500, within=60, what="500 batches")
    assert box.arrivals == ids(a.instance, 500)  # every one, once, in order
    assert box.duplicates <= 1  # at most the one in flight when killed
    await stop(b)
    assert sorted(p.name for p in (tmp_path / "gw-a").iterdir()) == []


async def test_a_move_in_a_cloud_outage_hands_the_queue_over(
    ingest: tuple[Ingest, str], tmp_path: Path
) -> None:
    box, url = ingest
    port = unused_port()
    new = await start(url, tmp_path / "gw-b", 5, HANDOVER_PORT=port)
    old = await start(url, tmp_path / "gw-a", 500, HANDOVER_PEERS=f"127.0.0.1:{port}")
    old.proc.send_signal(signal.SIGTERM)
    assert (await old.line("left ")) == "left 0"
    assert await old.proc.wait() == 0
    assert not list((tmp_path / "gw-a").iterdir())  # nothing stays behind
    box.down = False
    await eventually(lambda: len(box.arrivals) == 505, within=60, what="505 batches")
    handed = [i for i in box.arrivals if old.instance in i]
    own = [i for i in box.arrivals if new.instance in i]
    assert handed == ids(old.instance, 500)
    assert own == ids(new.instance, 5)
    # the handed-over batches are older: only the new pod's batch in flight goes before
    assert box.arrivals.index(handed[-1]) < box.arrivals.index(own[1])
    assert box.duplicates <= 1
    await stop(new)


@pytest.mark.parametrize("victim", ["sender", "receiver"])
async def test_kill_9_mid_handover_loses_nothing(
    ingest: tuple[Ingest, str], tmp_path: Path, victim: str
) -> None:
    box, url = ingest
    port = unused_port()
    n = 1400
    # the receiver fsyncs every record: a handover slow enough to be cut in the middle
    new = await start(url, tmp_path / "gw-b", 0, HANDOVER_PORT=port, QUEUE_FSYNC="batch")
    old = await start(url, tmp_path / "gw-a", n, HANDOVER_PEERS=f"127.0.0.1:{port}")
    new_log = tmp_path / "gw-b" / new.instance / "log"
    old.proc.send_signal(signal.SIGTERM)
    await eventually(lambda: new_log.stat().st_size > 0, within=20, interval=0.001)
    (old if victim == "sender" else new).proc.kill()
    await (old if victim == "sender" else new).proc.wait()
    waiting, _, _ = replay(new_log.read_bytes())
    assert 0 < len(waiting) < n, "the kill did not land in the middle of the handover"
    if victim == "sender":
        assert await old.proc.wait() == -signal.SIGKILL
        # what it had not handed over waits on its gateway: the next process there adopts it
        old_again = await start(url, tmp_path / "gw-a")
    else:
        assert await new.proc.wait() == -signal.SIGKILL
        # the new pod's container restarts on its gateway and adopts what it had stored;
        # the old pod, still within its grace period, hands the rest over to it
        new = await start(url, tmp_path / "gw-b", 0, HANDOVER_PORT=port)
        assert (await old.line("left ", within=40)) == "left 0"
        old_again = None
    assert sum(1 for _ in (tmp_path / "gw-b").iterdir()) > 0
    box.down = False
    await eventually(lambda: len(box.arrivals) == n, within=60, what=f"{n} batches")
    assert sorted(box.arrivals) == sorted(ids(old.instance, n))  # every one arrived
    assert box.duplicates <= CHUNK_BATCHES + 1  # at most the chunk cut in the middle
    for p in (new, old_again):
        if p is not None:
            await stop(p)
    await stop(old)


def status(line: str) -> dict[str, int]:
    """The driver's ``queued <instance> <n> key=value...`` line."""
    _, _, waiting, *fields = line.split()
    return {"waiting": int(waiting), **{k: int(v) for k, v in (f.split("=") for f in fields)}}


async def test_a_full_queue_drops_the_oldest_summaries_counted_keeps_alerts_across_kill_9(
    ingest: tuple[Ingest, str], tmp_path: Path
) -> None:
    box, url = ingest
    # 500 batches (alerts: 7, 57, ..., 457) into a queue of 100, the cloud down
    a = await start(url, tmp_path / "gw-a", 500, QUEUE_MAX_BATCHES=100)
    seen = status(a.last)
    assert seen["dropped_summary"] == 400
    assert seen["dropped_alert"] == 0
    a.proc.kill()
    await a.proc.wait()
    b = await start(url, tmp_path / "gw-a", QUEUE_MAX_BATCHES=100)
    box.down = False
    await eventually(lambda: len(box.arrivals) == 100, within=60, what="100 batches")
    alerts = [i for i in range(500) if i % 50 == 7]
    summaries = [i for i in range(500) if i % 50 != 7][-90:]  # the newest, oldest dropped
    expected = [ids(a.instance, 500)[i] for i in sorted(alerts + summaries)]
    assert box.arrivals == expected  # every alert, in order; no dropped one came back
    await asyncio.sleep(0.5)
    assert len(box.arrivals) == 100
    await stop(b)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs), so a write past it gets ENOSPC from the kernel."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while _room_for(fd):
            pass
    finally:
        os.close(fd)
    return filler


def _room_for(fd: int) -> bool:
    """Write a page; False once the kernel says the disk is full (and only then)."""
    try:
        os.write(fd, b"\0" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return False
    return True


async def test_a_full_disk_loses_nothing_while_running_and_nothing_after_space_returns(
    ingest: tuple[Ingest, str], small_disk: Path
) -> None:
    box, url = ingest
    queue_dir = small_disk / "omh"
    a = await start(url, queue_dir, 200, COMMANDS=1, RESYNC_SECONDS=0.2)
    filler = fill(small_disk)  # something else on the gateway took the rest of the disk
    seen = await a.command("submit 300")
    assert seen["behind"] == 1, seen  # the log could not take them: the queue goes on
    assert seen["waiting"] == 500
    assert a.proc.returncode is None
    filler.unlink()
    await asyncio.sleep(0.3)
    seen = await a.command("submit 1")  # the next change rewrites the whole log
    assert seen["behind"] == 0, seen
    a.proc.kill()  # now a crash loses nothing
    await a.proc.wait()
    b = await start(url, queue_dir)
    box.down = False
    await eventually(lambda: len(box.arrivals) == 501, within=60, what="501 batches")
    assert box.arrivals == ids(a.instance, 501)
    assert box.duplicates <= 1
    await stop(b)
