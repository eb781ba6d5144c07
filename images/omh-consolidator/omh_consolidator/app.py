"""Wiring: reader -> pipeline -> forwarder, a once-a-second window clock, ``/metrics``.

SIGTERM (a rollout, or the rebalancer moving the pod to another gateway) stops the
reader first (StopNotify, disconnect), sends the open window as it is, gives the queue
``DRAIN_SECONDS`` to reach the cloud, then exits. Whatever is still queued then is lost
and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys

import aiohttp
from aiohttp import web

from omh_consolidator.config import Config, ConfigError, device_address, from_env
from omh_consolidator.consolidate import Consolidator
from omh_consolidator.datapoints import PointFactory, Provenance
from omh_consolidator.forward import Backoff, HttpForwarder, Sink, StdoutSink
from omh_consolidator.metrics import Metrics
from omh_consolidator.pipeline import Pipeline
from omh_consolidator.reader import HeartRateReader

log = logging.getLogger("omh_consolidator")


async def metrics_server(metrics: Metrics, port: int) -> web.AppRunner:
    async def exposition(_: web.Request) -> web.Response:
        return web.Response(text=metrics.exposition(), content_type="text/plain")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, port=port).start()
    return runner


async def serve(cfg: Config, stop: asyncio.Event) -> None:
    metrics = Metrics()
    rng = random.Random()
    async with aiohttp.ClientSession() as session:
        address = cfg.device_address or await device_address(session, cfg.device_name)
        sink: Sink
        if cfg.ingest_url is None:
            log.warning("INGEST_URL is unset: batches go to stdout")
            sink = StdoutSink(metrics, source=cfg.source_name)
        else:
            sink = HttpForwarder(
                cfg.ingest_url,
                session,
                metrics,
                source=cfg.source_name,
                max_queue=cfg.max_queue,
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
            for task in (stopping, ticking, reading):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            pipeline.close()
            if not await sink.drain(cfg.drain_s):
                log.error("shutting down with batches still queued (see queue_batches)")
            forwarding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forwarding
            if runner is not None:
                await runner.cleanup()


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

    asyncio.run(run())
