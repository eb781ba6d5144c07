"""A consolidator process without a strap, for the kill -9 tests: the real settings, queue,
forwarder, handover endpoint and shutdown (``app.leave``), fed ``BATCHES`` summaries at
start instead of readings (every 50th, from the 8th, an alert). Prints ``queued <instance>
<waiting> behind=<0|1> dropped_summary=<n> dropped_alert=<n>`` once they are in the queue, and
again after each ``submit <n>`` read on stdin (with ``COMMANDS=1``: n more batches, numbered
on). ``RESYNC_SECONDS`` shortens the queue's retry of a log behind (a full disk).

    python tests/images/omh/queue_process.py   (env: as the image, plus BATCHES)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "images" / "omh-consolidator"))

import aiohttp
from omh_consolidator import queue as queue_module
from omh_consolidator.app import _stop, leave, open_queue, start_site
from omh_consolidator.config import from_env
from omh_consolidator.forward import Backoff, HttpForwarder, new_instance
from omh_consolidator.handover import Receiver, handover_app
from omh_consolidator.metrics import Metrics


def status(fwd: HttpForwarder, metrics: Metrics, instance: str) -> str:
    queue = fwd.queue
    return (
        f"queued {instance} {len(queue)} behind={int(queue.behind)}"
        f" dropped_summary={metrics.get('batches_dropped_total', kind='summary'):.0f}"
        f" dropped_alert={metrics.get('batches_dropped_total', kind='alert'):.0f}"
    )


async def commands(fwd: HttpForwarder, metrics: Metrics, instance: str, first: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    n = first
    while line := await reader.readline():
        verb, count = line.decode().split()
        assert verb == "submit", verb
        for i in range(n, n + int(count)):
            submit(fwd, i)
        n += int(count)
        print(status(fwd, metrics, instance), flush=True)


def submit(fwd: HttpForwarder, i: int) -> None:
    fwd.submit("alert" if i % 50 == 7 else "summary", [{"i": i}], window={"i": i})


async def main() -> None:
    if "RESYNC_SECONDS" in os.environ:
        queue_module.RESYNC_SECONDS = float(os.environ["RESYNC_SECONDS"])
    cfg = from_env()
    metrics = Metrics()
    instance = new_instance()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with aiohttp.ClientSession() as session:
        queue = await open_queue(cfg, instance, metrics)
        assert cfg.ingest_url is not None
        fwd = HttpForwarder(
            cfg.ingest_url,
            session,
            metrics,
            source=cfg.source_name,
            queue=queue,
            instance=instance,
            backoff=Backoff(initial_s=0.05, factor=2.0, cap_s=0.2, jitter=0.0),
            timeout_s=2,
        )
        receiver = Receiver(queue, metrics, instance)
        runner = None
        if cfg.handover_port:
            runner = await start_site(handover_app(receiver, 64 << 20), cfg.handover_port)
        batches = int(os.environ.get("BATCHES", "0"))
        for i in range(batches):
            submit(fwd, i)
        if not queue.behind:
            await queue.sync()
        print(status(fwd, metrics, instance), flush=True)
        forwarding = asyncio.create_task(fwd.run())
        if os.environ.get("COMMANDS") == "1":
            reading = asyncio.create_task(commands(fwd, metrics, instance, batches))
        await stop.wait()
        if os.environ.get("COMMANDS") == "1":
            reading.cancel()
        receiver.leaving = True
        forwarding = await leave(cfg, fwd, forwarding, session, metrics)
        await _stop(forwarding)
        print(f"left {len(queue)}", flush=True)
        queue.close()
        if runner is not None:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
