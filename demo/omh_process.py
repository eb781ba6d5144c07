"""One Open mHealth consolidator as its pod would run it, for the demo (kwok runs no
containers): the image's settings, on-disk queue, forwarder, handover endpoint and shutdown
(``app.leave``), fed one summary every ``SUMMARY_EVERY_SECONDS`` instead of a strap's
readings. Prints ``started <instance>`` at start and, on SIGTERM once it has left,
``left <instance> submitted=<n> waiting=<n> handed=<n>``.

    python -m demo.omh_process   (env: as the image, plus SUMMARY_EVERY_SECONDS)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "images" / "omh-consolidator"))

import aiohttp
from omh_consolidator.app import _stop, leave, open_queue, start_site
from omh_consolidator.config import from_env
from omh_consolidator.forward import Backoff, HttpForwarder, new_instance
from omh_consolidator.handover import Receiver, handover_app
from omh_consolidator.metrics import Metrics


async def main() -> None:
    cfg = from_env()
    assert cfg.ingest_url is not None, "INGEST_URL is required"
    every = float(os.environ.get("SUMMARY_EVERY_SECONDS", "0.5"))
    metrics = Metrics()
    instance = new_instance()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with aiohttp.ClientSession() as session:
        queue = await open_queue(cfg, instance, metrics)
        fwd = HttpForwarder(
            cfg.ingest_url,
            session,
            metrics,
            source=cfg.source_name,
            queue=queue,
            instance=instance,
            backoff=Backoff(initial_s=0.2, factor=2.0, cap_s=1.0),  # demo speed
            timeout_s=cfg.post_timeout_s,
        )
        receiver = Receiver(queue, metrics, instance)
        runner = await start_site(handover_app(receiver, 64 << 20), cfg.handover_port)
        print(f"started {instance} adopted={len(queue)}", flush=True)
        forwarding = asyncio.create_task(fwd.run())
        submitted = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if not stop.is_set():
                submitted += 1
                fwd.submit("summary", [{"n": submitted}], window={"n": submitted})
        receiver.leaving = True
        forwarding = await leave(cfg, fwd, forwarding, session, metrics)
        await _stop(forwarding)
        handed = metrics.get("handover_batches_sent_total")
        print(
            f"left {instance} submitted={submitted} waiting={len(queue)} handed={handed:.0f}",
            flush=True,
        )
        queue.close()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
