"""A consolidator process without a strap, for the kill -9 tests: the real settings, queue,
forwarder, handover endpoint and shutdown (``app.leave``), fed ``BATCHES`` summaries at
start instead of readings. Prints ``queued <instance>`` once they are in the queue.

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
from omh_consolidator.app import _stop, leave, open_queue, start_site
from omh_consolidator.config import from_env
from omh_consolidator.forward import Backoff, HttpForwarder, new_instance
from omh_consolidator.handover import Receiver, handover_app
from omh_consolidator.metrics import Metrics


async def main() -> None:
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
        for i in range(int(os.environ.get("BATCHES", "0"))):
            fwd.submit("alert" if i % 50 == 7 else "summary", [{"i": i}], window={"i": i})
        await queue.sync()
        print(f"queued {instance} {len(queue)}", flush=True)
        forwarding = asyncio.create_task(fwd.run())
        await stop.wait()
        receiver.leaving = True
        forwarding = await leave(cfg, fwd, forwarding, session, metrics)
        await _stop(forwarding)
        print(f"left {len(queue)}", flush=True)
        queue.close()
        if runner is not None:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
