"""Wiring: reader -> pipeline -> forwarder, a once-a-second window clock, ``/metrics``,
the handover endpoint.

SIGTERM (a rollout, or the rebalancer moving the pod to another gateway) stops taking
handovers and stops the reader (StopNotify, disconnect), queues the open window as it is,
then has ``DRAIN_SECONDS`` to empty the queue: with ``HANDOVER_PEERS``, by handing it to the
pod that takes over (``handover.py``), towards the cloud meanwhile and when no peer takes
it; without, towards the cloud. Whatever still waits then stays in the log on this
gateway's disk (``QUEUE_DIR``) for the next consolidator process here to adopt.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import sys
from typing import Any

import aiohttp
from aiohttp import web

from omh_consolidator.config import Config, ConfigError, device_address, from_env
from omh_consolidator.consolidate import Consolidator
from omh_consolidator.datapoints import PointFactory, Provenance
from omh_consolidator.forward import Backoff, HttpForwarder, Sink, StdoutSink, new_instance
from omh_consolidator.handover import Receiver, hand_over, handover_app
from omh_consolidator.metrics import Metrics
from omh_consolidator.pipeline import Pipeline
from omh_consolidator.queue import BatchQueue
from omh_consolidator.reader import HeartRateReader

log = logging.getLogger("omh_consolidator")


async def start_site(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, port=port).start()
    return runner


async def open_queue(cfg: Config, instance: str, metrics: Metrics) -> BatchQueue:
    if cfg.queue_dir is None:
        log.warning("QUEUE_DIR is unset: the queue lives in memory, a crash loses it")
        return BatchQueue(metrics, max_batches=cfg.max_queue, max_bytes=cfg.max_queue_bytes)
    try:
        queue = await asyncio.to_thread(
            BatchQueue.open,
            cfg.queue_dir,
            instance,
            metrics,
            max_batches=cfg.max_queue,
            max_bytes=cfg.max_queue_bytes,
            fsync=cfg.fsync,
        )
    except OSError as exc:  # not a directory, not writable by this uid, disk full
        raise ConfigError(f"QUEUE_DIR={cfg.queue_dir}: {exc}") from None
    log.info("queue in %s (fsync %s): %d batches waiting", queue.directory, cfg.fsync, len(queue))
    return queue


async def leave(
    cfg: Config,
    forwarder: HttpForwarder,
    forwarding: asyncio.Task[None],
    session: aiohttp.ClientSession,
    metrics: Metrics,
) -> asyncio.Task[None]:
    """Empty the queue before exiting, within ``DRAIN_SECONDS``: hand it over if a peer
    takes it, else towards the cloud; returns the forwarding task."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.drain_s
    queue = forwarder.queue
    while len(queue) and loop.time() < deadline:
        if cfg.handover_peers:
            # between two POSTs, not in one: a POST cut every round got nothing
            # acknowledged by a slow cloud, and what it had sent may be stored twice
            if not await forwarder.hold(max(0.0, deadline - loop.time())):
                break  # still waiting for its answer at the deadline
            try:
                await hand_over(
                    queue,
                    cfg.handover_peers,
                    session,
                    metrics,
                    forwarder.instance,
                    timeout_s=max(0.5, min(10.0, deadline - loop.time())),
                )
            finally:
                forwarder.resume()
            if not len(queue):
                break
        remaining = max(0.0, deadline - loop.time())
        await forwarder.drain(min(1.0, remaining) if cfg.handover_peers else remaining)
    return forwarding


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it. An error it ended with is logged, not raised: raised
    in ``serve``'s cleanup (a crashed reader's, again), it skipped the rest of it: the open
    window, the drain, closing the log and the HTTP sites."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as exc:
        log.error("the %s task ended with %r", task.get_name(), exc)


async def metrics_server(metrics: Metrics, port: int) -> web.AppRunner:
    async def exposition(_: web.Request) -> web.Response:
        return web.Response(text=metrics.exposition(), content_type="text/plain")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    app.router.add_get("/healthz", healthz)
    return await start_site(app, port)


async def serve(cfg: Config, stop: asyncio.Event) -> None:
    metrics = Metrics()
    rng = random.Random()
    instance = new_instance()
    async with aiohttp.ClientSession() as session:
        address = cfg.device_address or await device_address(session, cfg.device_name)
        sink: Sink
        forwarder: HttpForwarder | None = None
        receiver: Receiver | None = None
        if cfg.ingest_url is None:
            log.warning("INGEST_URL is unset: batches go to stdout")
            sink = StdoutSink(metrics, source=cfg.source_name)
        else:
            queue = await open_queue(cfg, instance, metrics)
            sink = forwarder = HttpForwarder(
                cfg.ingest_url,
                session,
                metrics,
                source=cfg.source_name,
                queue=queue,
                instance=instance,
                backoff=Backoff(initial_s=1.0, factor=2.0, cap_s=cfg.retry_cap_s),
                timeout_s=cfg.post_timeout_s,
                rng=rng,
            )
        points = PointFactory(Provenance(cfg.user_id, cfg.source_name))
        pipeline = Pipeline(
            sink,
            points,
            metrics,
            mode=cfg.mode,
            consolidator=Consolidator(cfg.window_s, cfg.thresholds),
        )
        reader = HeartRateReader(
            address,
            pipeline.on_notification,
            metrics,
            adapter=cfg.adapter,
            scan_timeout_s=cfg.scan_timeout_s,
            backoff=Backoff(initial_s=1.0, factor=2.0, cap_s=cfg.retry_cap_s),
            rng=rng,
        )

        async def clock() -> None:
            while True:
                await asyncio.sleep(1.0)
                pipeline.tick()

        handover_runner: web.AppRunner | None = None
        if forwarder is not None and cfg.handover_port:
            receiver = Receiver(forwarder.queue, metrics, instance)
            app = handover_app(receiver, max(cfg.max_queue_bytes, 1 << 20) + (1 << 20))
            handover_runner = await start_site(app, cfg.handover_port)
        # /healthz last: the readiness probe's answer says the handover endpoint listens
        # (a rollout stops the old pod, which hands its queue over, once this one is ready)
        runner = await metrics_server(metrics, cfg.metrics_port) if cfg.metrics_port else None
        log.info("reading strap %s (%s) in %s mode", address, cfg.device_name, cfg.mode)
        reading = asyncio.create_task(reader.run(), name="reader")
        forwarding = asyncio.create_task(sink.run(), name="forwarder")
        ticking = asyncio.create_task(clock(), name="clock")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait(
                {reading, forwarding, ticking, stopping}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done - {stopping}:
                task.result()  # a crashed task: raise its error
        finally:
            if receiver is not None:
                receiver.leaving = True
            for task in (stopping, ticking, reading):
                await _stop(task)
            pipeline.close()
            if forwarder is not None:
                forwarding = await leave(cfg, forwarder, forwarding, session, metrics)
            await _stop(forwarding)
            if forwarder is not None:
                if len(forwarder.queue):
                    log.error(
                        "leaving %d batches in %s for the next consolidator on this gateway",
                        len(forwarder.queue),
                        forwarder.queue.directory or "memory (lost)",
                    )
                forwarder.queue.close()
            for r in (handover_runner, runner):
                if r is not None:
                    await r.cleanup()


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = from_env()
    except ConfigError as exc:
        sys.exit(f"omh-consolidator: {exc}")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(cfg, stop)

    try:
        asyncio.run(run())
    except ConfigError as exc:  # found at start: the Device object, the queue directory
        sys.exit(f"omh-consolidator: {exc}")
