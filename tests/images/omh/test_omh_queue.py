"""The on-disk queue: real files, real flocks; what a crash, a torn write or a bad disk leaves."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from omh_consolidator import queue as queue_module
from omh_consolidator.config import ConfigError, from_env
from omh_consolidator.handover import Receiver, handover_app
from omh_consolidator.metrics import Metrics
from omh_consolidator.queue import Batch, BatchQueue, encode_batch, records, replay

from tests.images.omh.endless_answer import endless_503


def batch(seq: int, kind: str = "summary", size: int = 10, boot: str = "b0") -> Batch:
    return Batch(seq, f"src/{boot}/{seq}", kind, b"x" * size, 3)


def ids(q: BatchQueue) -> list[str]:
    return [b.batch_id for b in q.waiting(10_000, 1 << 40)]


def crash(q: BatchQueue) -> None:
    """What kill -9 leaves: the log as written, the flock released by the kernel."""
    assert q._fd is not None
    assert q._lock_fd is not None
    os.close(q._fd)
    os.close(q._lock_fd)
    q._fd = q._lock_fd = None


def test_a_crashed_owners_batches_are_adopted_with_ids_and_order(tmp_path: Path) -> None:
    q = BatchQueue.open(tmp_path, "aaa", Metrics(), fsync="none")
    for i in range(1, 6):
        q.append(batch(i, "alert" if i == 3 else "summary"))
    sent = q.take()
    assert sent is not None
    q.done([sent], "sent")
    crash(q)
    metrics = Metrics()
    again = BatchQueue.open(tmp_path, "bbb", metrics)
    assert ids(again) == [f"src/b0/{i}" for i in (2, 3, 4, 5)]
    assert [b.kind for b in again.waiting(10, 1 << 20)] == [
        "summary",
        "alert",
        "summary",
        "summary",
    ]
    assert metrics.get("queue_adopted_batches_total") == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bbb"]  # the dead one is gone
    again.close()
    assert (tmp_path / "bbb").exists()  # batches still wait: kept for the next owner


def test_a_live_owner_is_left_alone(tmp_path: Path) -> None:
    first = BatchQueue.open(tmp_path, "aaa", Metrics())
    first.append(batch(1))
    second = BatchQueue.open(tmp_path, "bbb", Metrics())
    assert len(second) == 0
    assert len(first) == 1
    assert (tmp_path / "aaa" / "log").exists()
    second.close()
    first.close()


def test_a_torn_tail_is_cut_and_the_rest_recovered(tmp_path: Path) -> None:
    q = BatchQueue.open(tmp_path, "aaa", Metrics(), fsync="none")
    for i in range(1, 4):
        q.append(batch(i))
    crash(q)
    with (tmp_path / "aaa" / "log").open("ab") as f:
        f.write(encode_batch(batch(4), 3)[:-5])  # the crash tore the last append
    metrics = Metrics()
    again = BatchQueue.open(tmp_path, "bbb", metrics)
    assert ids(again) == [f"src/b0/{i}" for i in (1, 2, 3)]
    assert metrics.get("queue_corrupt_logs_total") == 0
    again.close()


def test_a_corrupt_record_keeps_the_prefix_and_a_copy_of_the_log(tmp_path: Path) -> None:
    q = BatchQueue.open(tmp_path, "aaa", Metrics(), fsync="none")
    for i in range(1, 4):
        q.append(batch(i))
    crash(q)
    log = tmp_path / "aaa" / "log"
    data = bytearray(log.read_bytes())
    second = len(encode_batch(batch(1), 0))
    data[2 * second - 1] ^= 0xFF  # the last body byte of the second record: only its CRC shows
    log.write_bytes(bytes(data))
    metrics = Metrics()
    again = BatchQueue.open(tmp_path, "bbb", metrics)
    assert ids(again) == ["src/b0/1"]
    assert metrics.get("queue_corrupt_logs_total") == 1
    (kept,) = tmp_path.glob("corrupt-aaa-*.log")
    assert kept.read_bytes() == bytes(data)  # nothing an admin could want is gone
    again.close()


def test_a_damaged_length_mid_log_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    q = BatchQueue.open(tmp_path, "aaa", Metrics(), fsync="none")
    for i in range(1, 11):
        q.append(batch(i, "alert"))
    crash(q)
    log = tmp_path / "aaa" / "log"
    data = bytearray(log.read_bytes())
    record = len(encode_batch(batch(1, "alert"), 0))
    data[3 * record + 1] ^= 0x10  # the 4th record's length + 1 MiB: past the end of the log
    log.write_bytes(bytes(data))
    metrics = Metrics()
    again = BatchQueue.open(tmp_path, "bbb", metrics)
    assert ids(again) == ["src/b0/1", "src/b0/2", "src/b0/3"]
    assert metrics.get("queue_corrupt_logs_total") == 1  # was 0: taken for a torn tail
    (kept,) = tmp_path.glob("corrupt-aaa-*.log")
    assert kept.read_bytes() == bytes(data)  # batches 4..10 are still there for an admin
    again.close()
    _, good, error = replay(bytes(data))
    assert good == 3 * record
    assert error is not None
    assert "whole record starts at byte" in error


def test_an_unreadable_dead_log_is_left_and_the_others_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owners = [BatchQueue.open(tmp_path, owner, Metrics(), fsync="none") for owner in ("aaa", "bbb")]
    for q, owner in zip(owners, ("aaa", "bbb"), strict=True):
        q.append(batch(1, "alert", boot=owner))
    for q in owners:
        crash(q)
    bad = tmp_path / "aaa" / "log"
    read_bytes = Path.read_bytes

    def failing_disk(self: Path) -> bytes:
        if self == bad:
            raise OSError(5, "Input/output error", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", failing_disk)
    metrics = Metrics()
    again = BatchQueue.open(tmp_path, "ccc", metrics)  # raised: every start failed
    assert ids(again) == ["src/bbb/1"]
    assert metrics.get("queue_unreadable_logs_total") == 1
    assert bad.exists()  # left in place: not deleted as if adopted
    assert not (tmp_path / "bbb").exists()
    assert _try_lock_elsewhere(tmp_path / "aaa" / "lock")  # not held either
    again.close()
    monkeypatch.setattr(Path, "read_bytes", read_bytes)  # the disk reads again
    third = BatchQueue.open(tmp_path, "ddd", Metrics())
    assert ids(third) == ["src/aaa/1", "src/bbb/1"]
    third.close()


def test_bounds_drop_the_oldest_summaries_keep_alerts_and_stay_dropped(tmp_path: Path) -> None:
    metrics = Metrics()
    q = BatchQueue.open(tmp_path, "aaa", metrics, max_batches=100, max_bytes=50, fsync="none")
    q.append(batch(1, "alert"))
    for i in range(2, 8):  # 10 bytes each: at most 5 wait
        q.append(batch(i))
    q.append(batch(8, "alert"))
    assert ids(q) == [f"src/b0/{i}" for i in (1, 5, 6, 7, 8)]
    assert metrics.get("batches_dropped_total", kind="summary") == 3
    assert metrics.get("batches_dropped_total", kind="alert") == 0
    assert metrics.get("queue_bytes") == 50
    crash(q)
    again = BatchQueue.open(tmp_path, "bbb", Metrics(), max_batches=100, max_bytes=50)
    assert ids(again) == [f"src/b0/{i}" for i in (1, 5, 6, 7, 8)]  # the drops were logged
    again.close()


def test_handed_over_batches_go_in_front_in_chunk_order_once(tmp_path: Path) -> None:
    q = BatchQueue.open(tmp_path, "aaa", Metrics(), fsync="none")
    q.append(batch(1, boot="own"))
    assert q.take() is not None  # in flight: stays first
    q.append(batch(2, boot="own"))
    assert q.insert_handed([batch(1, boot="old"), batch(2, boot="old")]) == 2
    assert q.insert_handed([batch(2, boot="old"), batch(3, boot="old")]) == 1  # a resend
    expected = ["src/own/1", "src/old/1", "src/old/2", "src/old/3", "src/own/2"]
    assert ids(q) == expected
    crash(q)
    again = BatchQueue.open(tmp_path, "bbb", Metrics())
    # after a crash the handed-over ones come first: they are the oldest
    assert ids(again) == ["src/old/1", "src/old/2", "src/old/3", "src/own/1", "src/own/2"]
    again.close()


def test_compaction_keeps_what_waits_and_bounds_the_log(tmp_path: Path) -> None:
    metrics = Metrics()
    q = BatchQueue.open(tmp_path, "aaa", metrics, fsync="none")
    q.append(batch(0, "alert"))
    for i in range(1, 400):
        q.append(batch(i, size=4000))
        sent = q.waiting(2, 1 << 20)[1]
        q.done([sent], "sent")
    assert metrics.get("queue_compactions_total") >= 1
    assert (tmp_path / "aaa" / "log").stat().st_size < 2 * 1024 * 1024
    crash(q)
    again = BatchQueue.open(tmp_path, "bbb", Metrics())
    assert ids(again) == ["src/b0/0"]
    again.done(again.waiting(1, 1 << 20), "sent")
    again.close()
    assert not (tmp_path / "bbb").exists()  # nothing waits: nothing left behind


@pytest.mark.parametrize("policy", ["group", "batch", "none"])
async def test_compaction_happens_under_every_fsync_policy(tmp_path: Path, policy: str) -> None:
    # group: each done() starts an fsync in a thread, and a rewrite must wait for it
    metrics = Metrics()
    q = BatchQueue.open(tmp_path, "aaa", metrics, fsync=policy)  # type: ignore[arg-type]
    q.append(batch(0, "alert"))
    for i in range(1, 400):
        q.append(batch(i, size=4000))
        sent = q.waiting(2, 1 << 20)[1]
        q.done([sent], "sent")
        await asyncio.sleep(0)  # the event loop runs between batches, as in the forwarder
    await q.sync()
    await asyncio.sleep(0.05)  # a flusher still running compacts when it is done
    assert metrics.get("queue_compactions_total") >= 1
    assert (tmp_path / "aaa" / "log").stat().st_size < 2 * 1024 * 1024
    crash(q)
    again = BatchQueue.open(tmp_path, "bbb", Metrics())
    assert ids(again) == ["src/b0/0"]
    again.close()


@pytest.mark.parametrize("policy", ["group", "batch", "none"])
async def test_every_policy_fsyncs_as_it_says(tmp_path: Path, policy: str) -> None:
    metrics = Metrics()
    q = BatchQueue.open(tmp_path, "aaa", metrics, fsync=policy)  # type: ignore[arg-type]
    for i in range(50):
        q.append(batch(i))
    await q.sync()
    fsyncs = metrics.get("queue_fsyncs_total")
    expected = {"batch": (51, 51), "group": (1, 2), "none": (1, 1)}[policy]
    assert expected[0] <= fsyncs <= expected[1], fsyncs
    q.close()


def test_the_log_refuses_what_a_peer_could_send_broken() -> None:
    good = encode_batch(batch(1), 0)
    assert [r.batch for r in records(good, strict=True)] == [batch(1)]
    with pytest.raises(ValueError, match="torn"):
        list(records(good[:-1], strict=True))
    assert replay(good[:-1]) == ([], 0, None)


def test_a_lock_held_elsewhere_is_a_live_owner(tmp_path: Path) -> None:
    (tmp_path / "ccc").mkdir()
    fd = os.open(tmp_path / "ccc" / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        q = BatchQueue.open(tmp_path, "aaa", Metrics())
        assert (tmp_path / "ccc").exists()
        q.close()
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QUEUE_FSYNC": "always"}, "QUEUE_FSYNC"),
        ({"QUEUE_MAX_BYTES": "0"}, "QUEUE_MAX_BYTES"),
        ({"HANDOVER_PEERS": "peer:http"}, "HANDOVER_PEERS"),
        ({"HANDOVER_PORT": "70000"}, "HANDOVER_PORT"),
    ],
)
def test_bad_queue_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_env({"DEVICE_NAME": "d", **env})


async def test_an_unusable_queue_dir_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    from omh_consolidator.app import open_queue

    (tmp_path / "file").write_text("")
    cfg = from_env({"DEVICE_NAME": "d", "QUEUE_DIR": str(tmp_path / "file" / "q")})
    with pytest.raises(ConfigError, match=r"QUEUE_DIR=.*file/q: .*Not a directory"):
        await open_queue(cfg, "aaa", Metrics())
    assert (tmp_path / "file").read_text() == ""  # nothing touched


def test_queue_settings_parse() -> None:
    cfg = from_env(
        {"DEVICE_NAME": "d", "QUEUE_DIR": "/q", "HANDOVER_PEERS": "a.b.svc, 10.0.0.1:9200"}
    )
    assert cfg.queue_dir == Path("/q")
    assert cfg.fsync == "group"
    assert cfg.handover_peers == (("a.b.svc", 9104), ("10.0.0.1", 9200))


def fault_queue_os(monkeypatch: pytest.MonkeyPatch, name: str, fake: Callable[..., Any]) -> None:
    """``fake`` in place of os.<name> as the queue module calls it, and no pause before the
    queue tries to rewrite a log it could not write (RESYNC_SECONDS)."""
    monkeypatch.setattr(queue_module.os, name, fake)
    monkeypatch.setattr(queue_module, "RESYNC_SECONDS", 0.0)


class FullDisk:
    """os.write in the queue module on a disk with ``room`` bytes left: a write past it is
    cut short (as the kernel does) and the next one fails with ENOSPC."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.room: int | None = None  # None: as much as the real disk has
        real = os.write

        def write(fd: int, data: bytes | memoryview) -> int:
            if self.room is None:
                return real(fd, data)
            if self.room == 0:
                raise OSError(28, "No space left on device")
            n = real(fd, bytes(data)[: self.room])
            self.room -= n
            return n

        fault_queue_os(monkeypatch, "write", write)


def test_a_full_disk_keeps_the_queue_in_memory_and_the_log_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FullDisk(monkeypatch)
    metrics = Metrics()
    q = BatchQueue.open(tmp_path, "aaa", metrics, fsync="none")
    for i in range(1, 4):
        q.append(batch(i))
    log_file = tmp_path / "aaa" / "log"
    whole = log_file.stat().st_size
    disk.room = 7  # the next record is torn after 7 bytes
    for i in range(4, 8):
        q.append(batch(i, "alert" if i == 5 else "summary"))
    assert q.behind
    assert ids(q) == [f"src/b0/{i}" for i in range(1, 8)]  # nothing lost while running
    assert metrics.get("queue_log_behind") == 1
    assert metrics.get("queue_write_failures_total") >= 2  # the torn write, the retries
    assert log_file.stat().st_size == whole  # the torn record was cut: no garbage mid-log
    waiting, good, error = replay(log_file.read_bytes())
    assert (len(waiting), good, error) == (3, whole, None)
    sent = q.take()
    assert sent is not None
    q.done([sent], "sent")
    disk.room = None  # space again: the next change rewrites the log with what waits
    q.append(batch(8))
    assert not q.behind
    assert metrics.get("queue_log_behind") == 0
    crash(q)
    again = BatchQueue.open(tmp_path, "bbb", Metrics())
    assert ids(again) == [f"src/b0/{i}" for i in range(2, 9)]  # ids, order, the alert
    again.close()


def test_logs_adopted_on_a_full_disk_stay_until_the_new_log_holds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FullDisk(monkeypatch)
    q = BatchQueue.open(tmp_path, "aaa", Metrics(), fsync="none")
    for i in range(1, 4):
        q.append(batch(i))
    crash(q)
    disk.room = 0
    again = BatchQueue.open(tmp_path, "bbb", Metrics())
    assert again.behind
    assert ids(again) == [f"src/b0/{i}" for i in range(1, 4)]
    assert (tmp_path / "aaa").exists()  # our log does not hold them: theirs stays, locked
    assert _try_lock_elsewhere(tmp_path / "aaa" / "lock") is False
    again.close()  # still full at close: both logs stay for the next owner
    assert (tmp_path / "aaa").exists()
    disk.room = None
    third = BatchQueue.open(tmp_path, "ccc", Metrics())
    assert ids(third) == [f"src/b0/{i}" for i in range(1, 4)]  # once each
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ccc"]
    third.close()


class FailingFsync:
    """os.fsync in the queue module failing with EIO while ``failing``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failing = False
        real = os.fsync

        def fsync(fd: int) -> None:
            if self.failing:
                raise OSError(5, "Input/output error")
            real(fd)

        fault_queue_os(monkeypatch, "fsync", fsync)


def test_an_fsync_error_in_batch_mode_is_a_failed_write_not_an_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FailingFsync(monkeypatch)
    metrics = Metrics()
    q = BatchQueue.open(tmp_path, "aaa", metrics, fsync="batch")
    q.append(batch(1))
    disk.failing = True
    q.append(batch(2, "alert"))  # raised out of append (and submit) before
    assert ids(q) == ["src/b0/1", "src/b0/2"]
    assert q.behind
    assert metrics.get("queue_write_failures_total") >= 1
    disk.failing = False
    q.append(batch(3))  # the next change rewrites the log: whole again
    assert not q.behind
    crash(q)
    again = BatchQueue.open(tmp_path, "bbb", Metrics())
    assert ids(again) == ["src/b0/1", "src/b0/2", "src/b0/3"]
    again.close()


async def test_an_fsync_error_in_group_mode_is_reported_not_lost_in_a_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FailingFsync(monkeypatch)
    metrics = Metrics()
    q = BatchQueue.open(tmp_path, "aaa", metrics, fsync="group")
    disk.failing = True
    q.append(batch(1, "alert"))
    await asyncio.sleep(0.1)  # the flusher's fsync fails in its thread
    assert q._flusher is None  # ended, not dead with an unobserved exception
    assert q.behind  # was: the log reported whole
    assert metrics.get("queue_log_behind") == 1
    assert metrics.get("queue_write_failures_total") == 1
    disk.failing = False
    q.append(batch(2))
    await q.sync()
    assert not q.behind
    crash(q)
    again = BatchQueue.open(tmp_path, "bbb", Metrics())
    assert ids(again) == ["src/b0/1", "src/b0/2"]
    again.close()


@asynccontextmanager
async def handing_over_to(q: BatchQueue) -> AsyncIterator[tuple[TestClient[Any, Any], bytes]]:
    """A client of the handover endpoint in front of ``q``, and a chunk of two batches
    (src/old/1, src/old/2) to hand over to it."""
    receiver = Receiver(q, Metrics(), "aaa")
    chunk = b"".join(encode_batch(batch(i, boot="old"), i) for i in (1, 2))
    async with TestClient(TestServer(handover_app(receiver, 1 << 20))) as client:
        yield client, chunk


async def test_a_pod_whose_fsync_fails_refuses_a_handover_with_507(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FailingFsync(monkeypatch)
    q = BatchQueue.open(tmp_path, "aaa", Metrics(), fsync="none")
    async with handing_over_to(q) as (client, chunk):
        disk.failing = True
        resp = await client.post("/v1/handover", data=chunk)
        assert resp.status == 507  # not stored: the sender keeps them (was: a 500)
    q.close()


def _try_lock_elsewhere(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


async def test_a_pod_whose_log_is_behind_refuses_a_handover_with_507(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FullDisk(monkeypatch)
    q = BatchQueue.open(tmp_path, "aaa", Metrics(), fsync="none")
    async with handing_over_to(q) as (client, chunk):
        disk.room = 0
        resp = await client.post("/v1/handover", data=chunk)
        assert resp.status == 507  # the sender keeps them in its log: safer than our memory
        assert q.behind
        resp = await client.post("/v1/handover", data=chunk)
        assert resp.status == 507  # refused outright while behind
        disk.room = None
        q.append(batch(1, boot="own"))  # the next change rewrites the log: whole again
        resp = await client.post("/v1/handover", data=chunk)
        assert resp.status == 200
    crash(q)
    again = BatchQueue.open(tmp_path, "bbb", Metrics())
    assert ids(again) == ["src/old/1", "src/old/2", "src/own/1"]
    again.close()


async def test_a_peers_huge_answer_is_not_read_whole(tmp_path: Path) -> None:
    from aiohttp import ClientSession, web
    from omh_consolidator.handover import hand_over

    finish = asyncio.Event()
    app = web.Application()
    app.router.add_post("/v1/handover", endless_503(finish))
    q = BatchQueue(Metrics())
    q.append(batch(1))
    metrics = Metrics()
    async with TestServer(app, host="127.0.0.1") as server, ClientSession() as session:
        assert server.port is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        handed = await hand_over(
            q, [("127.0.0.1", server.port)], session, metrics, "aaa", timeout_s=3
        )
        assert loop.time() - started < 2  # reading it whole waited for the timeout
        finish.set()
    assert handed == 0
    assert len(q) == 1
    assert metrics.get("handover_failures_total", reason="http_503") == 1


def test_adoption_keeps_the_bounds_dropping_the_oldest_summaries_first(tmp_path: Path) -> None:
    """Dead owners' logs larger than this process's bounds (a lower QUEUE_MAX_BATCHES, or
    several crashed owners) were adopted whole: more in memory than allowed until the next
    append."""
    owners = [BatchQueue.open(tmp_path, o, Metrics(), fsync="none") for o in ("aaa", "bbb")]
    for q, o in zip(owners, ("aaa", "bbb"), strict=True):
        for i in range(1, 6):
            q.append(batch(i, "alert" if i == 2 else "summary", boot=o))
    for q in owners:
        crash(q)
    metrics = Metrics()
    again = BatchQueue.open(tmp_path, "ccc", metrics, max_batches=4, max_bytes=1000)
    assert ids(again) == ["src/aaa/2", "src/bbb/2", "src/bbb/4", "src/bbb/5"]
    assert metrics.get("queue_batches") == 4
    assert metrics.get("batches_dropped_total", kind="summary") == 6
    assert metrics.get("batches_dropped_total", kind="alert") == 0
    again.close()
    third = BatchQueue.open(tmp_path, "ddd", Metrics(), max_batches=100)
    assert ids(third) == ["src/aaa/2", "src/bbb/2", "src/bbb/4", "src/bbb/5"]  # drops logged
    third.close()


NOBODY = 65532  # the image's uid


def _as_uid(uid: int, fn: Callable[[], object]) -> Any:
    """``fn()`` in a forked child running as ``uid`` (permissions as a pod sees them)."""
    import logging
    import pickle

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            lines: list[str] = []
            handler = logging.Handler()
            handler.emit = lambda r: lines.append(r.getMessage())  # type: ignore[method-assign]
            logging.getLogger("omh_consolidator").addHandler(handler)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with os.fdopen(write_end, "wb") as out:
                pickle.dump((fn(), lines), out)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as got:
        data = got.read()
    assert os.waitpid(pid, 0)[1] == 0
    return pickle.loads(data)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to leave directories another uid owns")
def test_another_uids_leftover_directories_are_reported_and_not_adopted_twice() -> None:
    """Root-owned directories (an admin's run as root, an older image) were taken for live
    owners: skipped without a word or a metric, even when readable; and an adopted one the
    pod could not delete was adopted, and sent, again at every start."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="omh-foreign-"))  # tmp_path: not reachable by NOBODY
    try:
        os.chmod(root, 0o777)
        owners = {
            o: BatchQueue.open(root, o, Metrics(), fsync="none") for o in ("shut", "priv", "open")
        }
        for o, q in owners.items():
            q.append(batch(1, "alert", boot=o))
        for q in owners.values():
            crash(q)
        os.chmod(root / "shut", 0o700)  # not even its lock reachable
        os.chmod(root / "priv", 0o755)  # lock and log 0600: not readable
        for name in ("lock", "log"):  # readable, but its files not removable by NOBODY
            os.chmod(root / "open" / name, 0o644)

        def start() -> tuple[list[str], dict[str, float], list[str]]:
            metrics = Metrics()
            q = BatchQueue.open(root, f"pod{os.getpid()}", metrics)
            got = ids(q)
            if (sent := q.take()) is not None:
                q.done([sent], "sent")
            q.close()
            names = ("queue_adopted_batches_total", "queue_unreadable_logs_total")
            counts = {n: metrics.get(n) for n in (*names, "queue_unremovable_logs_total")}
            return got, counts, sorted(p.name for p in root.iterdir())

        (got, counts, listing), lines = _as_uid(NOBODY, start)
        assert got == ["src/open/1"]
        assert counts == {
            "queue_adopted_batches_total": 1,
            "queue_unreadable_logs_total": 2,
            "queue_unremovable_logs_total": 1,
        }
        assert listing == [".adopted-open", "priv", "shut"]
        for name in ("shut", "priv"):
            assert any(f"cannot lock the queue directory {root / name}" in m for m in lines)
        assert any("left as" in m and ".adopted-open" in m for m in lines)
        (got, counts, _), _ = _as_uid(NOBODY, start)
        assert got == []  # sent once: not adopted and sent again
        assert counts["queue_unreadable_logs_total"] == 2
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_a_compaction_cannot_kill_the_fsync_task_or_leave_a_closed_log_fd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rewrite reopened the log after renaming the new file over it: an open failing
    there (EMFILE: the fd table full) escaped from the fsync task, which died unseen, and
    left the queue writing to a closed fd number (another file's, once reused)."""
    real_open = os.open

    def full_fd_table(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith("/log") and not flags & os.O_CREAT:  # the reopen only
            raise OSError(24, "Too many open files")
        return real_open(path, flags, *args)

    metrics = Metrics()
    q = BatchQueue.open(tmp_path, "aaa", metrics, fsync="group")
    fault_queue_os(monkeypatch, "open", full_fd_table)
    loop = asyncio.get_running_loop()
    died: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: died.append(context))
    q.append(batch(0, "alert"))
    for i in range(1, 400):
        q.append(batch(i, size=4000))
        q.done([q.waiting(2, 1 << 20)[1]], "sent")
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    flusher = q._flusher
    assert flusher is None or not flusher.done() or flusher.exception() is None
    assert metrics.get("queue_compactions_total") >= 1
    assert not q.behind
    q.append(batch(500, "alert"))
    await q.sync()
    crash(q)
    again = BatchQueue.open(tmp_path, "bbb", Metrics())
    assert ids(again) == ["src/b0/0", "src/b0/500"]  # the log took what came after
    again.close()
    import gc

    gc.collect()  # a dead task's unretrieved exception is reported when it is collected
    assert not died


def test_a_batch_the_bounds_dropped_at_adoption_is_not_adopted_again_from_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An owner that adopted another's log and died before removing it leaves the same
    batches in two logs. Dropped by the bounds from the first, they came back from the
    second, at the back: newer batches were dropped in their place, and the dropped ones
    (counted as dropped) sent."""
    a = BatchQueue.open(tmp_path, "aaa", Metrics(), fsync="none")
    for i in range(1, 6):
        a.append(batch(i, boot="a"))
    crash(a)
    monkeypatch.setattr(BatchQueue, "_release_adopted", lambda self: None)  # dies first
    b = BatchQueue.open(tmp_path, "bbb", Metrics(), fsync="none")
    b.append(batch(1, boot="b"))
    crash(b)
    for _, lock in b._adopted_dirs:  # the kernel drops its flocks on the adopted too
        os.close(lock)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aaa", "bbb"]
    metrics = Metrics()
    c = BatchQueue.open(tmp_path, "ccc", metrics, max_batches=3)
    assert ids(c) == ["src/a/4", "src/a/5", "src/b/1"]
    assert metrics.get("batches_dropped_total", kind="summary") == 3
    c.close()
