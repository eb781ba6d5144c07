"""The monitor's application: its Runtime, its tasks, and /metrics and /healthz.

``create_app`` builds the Runtime and reads nothing but a replay trace (a bad one is a
start-up error); the scanner, the Device watch and the publisher start when the app
starts and stop (removing our sightings) when it stops. Not an aiohttp app like the
extender's and the rebalancer's: a Pi-class gateway's 40 MB (issue 23 item 4) has no
room for aiohttp, so the two routes are served by gateway_monitor.httpserver, with the
same bodies the shared service shell gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud4iot.filewatch import watch_file
from cloud4iot.tasks import Supervisor
from gateway_monitor.backoff import backoff_delays
from gateway_monitor.discovery import (
    CandidateBook,
    CandidateWriter,
    ClassBook,
    Discovery,
    watch_classes,
)
from gateway_monitor.httpserver import Answer, Route
from gateway_monitor.kubeapi import KubeApi
from gateway_monitor.lease import LeaseRenewer, default_namespace
from gateway_monitor.metrics import Metrics
from gateway_monitor.monitor import Monitor
from gateway_monitor.publisher import Publisher, PublishPlan, Reason, Sighting
from gateway_monitor.recorder import FLUSH_INTERVAL, Recorder
from gateway_monitor.registry import DeviceSpec, Registry, watch_devices, watch_identity_keys
from gateway_monitor.report import report_body
from gateway_monitor.scanner import AdvertSource, BleakSource, ReplaySource
from gateway_monitor.settings import Settings, policy_offset
from gateway_monitor.traces import read_trace
from gateway_monitor.tracker import Tracker

log = logging.getLogger(__name__)

DRY_RUN_KEEP = 1000  # the last reports a dry run keeps in memory


@dataclass(slots=True)
class Runtime:
    """The running parts, for handlers and tests."""

    settings: Settings
    metrics: Metrics
    registry: Registry
    tracker: Tracker
    source: AdvertSource
    monitor: Monitor | None = None
    recorder: Recorder | None = None
    publisher: Publisher | None = None
    lease: LeaseRenewer | None = None
    dry_run_log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=DRY_RUN_KEEP))
    tasks: Supervisor = field(default_factory=Supervisor)
    scanner_errors_counted: int = 0


class DryRunSink:
    """Stands in for the publisher without an apiserver: logs each report it would
    write (every device heard at that moment) when what it lists changes, and keeps
    the last DRY_RUN_KEEP. (It kept one per advert, forever, and logged none.)"""

    def __init__(self, node: str, out: deque[dict[str, Any]]) -> None:
        self.node, self.out = node, out
        self.heard: dict[str, tuple[int, float]] = {}
        self._listed: dict[str, int] | None = None  # device -> rssi of the last report

    def update(self, device: str, sighting: Sighting | None) -> None:
        if sighting is None:
            self.heard.pop(device, None)
        else:
            self.heard[device] = (sighting.rssi, sighting.last_seen)
        listed = {d: rssi for d, (rssi, _) in self.heard.items()}
        if listed == self._listed:
            return  # only lastSeen moved
        self._listed = listed
        self.out.append(report_body(self.node, self.heard, time.time()))
        log.info(
            "dry run: report %s would list %s",
            self.node,
            ", ".join(f"{d} {r} dBm" for d, r in sorted(listed.items())) or "nothing",
        )

    def adopt(self, device: str, sighting: Sighting) -> None:
        pass

    def forget(self, device: str) -> None:
        pass


def _source(settings: Settings) -> AdvertSource:
    if settings.replay is not None:
        return ReplaySource(read_trace(settings.replay), speed=settings.speed, duty=settings.duty)
    return BleakSource(adapter=settings.adapter, mode=settings.scan_mode, duty=settings.duty)


def _sync_gauges(rt: Runtime) -> None:
    health = rt.source.health
    rt.metrics.scanner_up.set(1 if health.healthy else 0)
    if health.total_failures > rt.scanner_errors_counted:
        rt.metrics.errors.labels("scanner").inc(health.total_failures - rt.scanner_errors_counted)
        rt.scanner_errors_counted = health.total_failures
    if rt.publisher is not None:
        rt.metrics.apiserver_up.set(1 if rt.publisher.reachable else 0)


async def _ticker(rt: Runtime) -> None:
    assert rt.monitor is not None
    while True:
        await asyncio.sleep(rt.settings.tick_interval)
        rt.monitor.tick()
        _sync_gauges(rt)


async def _run_source(rt: Runtime) -> None:
    assert rt.monitor is not None
    await rt.source.run(rt.monitor.on_advert)


async def _record(rt: Runtime, recorder: Recorder) -> None:
    """Flush the recording every second in a thread; a failing disk never stops the monitor."""
    failing = False
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        try:
            await asyncio.to_thread(recorder.write, recorder.take())
            failing = False
        except OSError as exc:
            rt.metrics.errors.labels("recorder").inc()
            if not failing:
                log.warning("cannot write the recording %s: %s", recorder.path, exc)
            failing = True


@dataclass(slots=True)
class _OffsetWatch:
    """The policy's calibration offset for this node, re-read when the file changes
    (ConfigMap updates); a missing or unusable file keeps the offset in force."""

    rt: Runtime
    path: Path
    seen: float | None = None
    missing_logged: bool = False

    def check(self) -> str | tuple[float | None]:
        """Off the event loop: "unchanged", "refused", or the new offset to apply."""
        path, offset_now = self.path, self.rt.tracker.config.offset
        try:
            mtime = path.stat().st_mtime
            self.missing_logged = False
            if mtime == self.seen:
                return "unchanged"
            self.seen = mtime
            return (policy_offset(path, self.rt.settings.node),)
        except FileNotFoundError:
            # Present at start (Settings checks it), gone now: keep the offset in force.
            if not self.missing_logged:
                log.warning("no policy at %s; calibration offset stays %+.1f dB", path, offset_now)
                self.missing_logged = True
            self.seen = None
            return "unchanged"
        except (OSError, ValueError) as exc:
            log.warning("policy %s unusable, keeping offset %+.1f: %s", path, offset_now, exc)
            return "refused"

    def apply(self, checked: tuple[float | None]) -> str:
        offset = checked[0] or 0.0
        self.rt.tracker.set_offset(offset)
        log.info("calibration offset from %s: %+.1f dB", self.path, offset)
        return "applied"


async def _watch_policy(rt: Runtime) -> None:
    assert rt.settings.policy is not None
    watch = _OffsetWatch(rt, rt.settings.policy)
    await watch_file(
        rt.settings.policy_poll,
        watch.check,
        apply=watch.apply,
        what="gateway policy reload",
        keeps="the calibration offset in force",
        immediately=True,
    )


@contextlib.asynccontextmanager
async def _monitor_ctx(rt: Runtime) -> AsyncIterator[None]:
    settings, metrics, registry = rt.settings, rt.metrics, rt.registry
    backoff = backoff_delays()
    api_client: Any = None

    if settings.dry_run:
        sink: Any = DryRunSink(settings.node, rt.dry_run_log)
    else:
        api = api_client = await asyncio.to_thread(KubeApi.connect, settings.kubeconfig)
        # Our own namespace: our liveness Lease and the identity-keys Secret are there.
        namespace = settings.lease_namespace or default_namespace()
        registry.namespace = namespace
        rt.lease = LeaseRenewer(api, settings.node, namespace, settings.lease)

        def on_result(reason: Reason, ok: bool) -> None:
            metrics.publishes.labels(reason.value, "ok" if ok else "failed").inc()
            if not ok:
                metrics.errors.labels("publisher").inc()

        lease = rt.lease
        rt.publisher = Publisher(
            api,
            settings.node,
            PublishPlan(settings.publish),
            backoff=backoff,
            on_result=on_result,
            liveness=lambda: lease.healthy,
        )
        sink = rt.publisher
    if settings.record is not None:
        rt.recorder = Recorder(settings.record, max_bytes=settings.record_max_bytes)
    # Discovery (issue 25): unregistered adverts matching a DeviceClass become
    # candidates in our report; the elected extender decides what becomes a Device.
    discovery = None if settings.dry_run else Discovery(ClassBook(), CandidateBook())
    rt.monitor = Monitor(
        settings.node,
        rt.tracker,
        registry,
        sink,
        metrics,
        clock=rt.source.clock,
        recorder=rt.recorder,
        discovery=discovery,
    )

    if settings.dry_run:
        registry.replace_all(DeviceSpec(n, a.upper()) for n, a in settings.static_devices.items())
    else:
        assert rt.publisher is not None
        rt.tasks.spawn(
            watch_devices(
                api,
                registry,
                settings.node,
                backoff=backoff,
                on_error=metrics.errors.labels("registry").inc,
            ),
            "device-watch",
        )
        rt.tasks.spawn(
            watch_identity_keys(
                api,
                registry,
                namespace,
                backoff=backoff,
                on_error=metrics.errors.labels("registry").inc,
            ),
            "identity-keys-watch",
        )
        rt.tasks.spawn(_publish(rt.publisher), "publisher")
        assert discovery is not None
        rt.tasks.spawn(
            watch_classes(
                api,
                discovery.classes,
                backoff=backoff,
                on_error=metrics.errors.labels("registry").inc,
            ),
            "class-watch",
        )
        writer = CandidateWriter(api, settings.node, discovery.book, backoff)
        rt.tasks.spawn(writer.run(), "candidates")
        assert rt.lease is not None
        rt.tasks.spawn(rt.lease.run(), "lease")
    if settings.policy is not None and settings.rssi_offset is None:
        rt.tasks.spawn(_watch_policy(rt), "policy")
    rt.tasks.spawn(_ticker(rt), "ticker")
    if rt.recorder is not None:
        rt.tasks.spawn(_record(rt, rt.recorder), "recorder")
    rt.tasks.spawn(_run_source(rt), "source")
    try:
        yield
    finally:
        await rt.tasks.stop()
        if rt.recorder is not None:
            try:
                await asyncio.to_thread(rt.recorder.write, rt.recorder.take())
            except OSError as exc:
                log.warning("cannot write the recording %s: %s", rt.recorder.path, exc)
        if rt.publisher is not None:
            removed = await rt.publisher.remove_all()
            log.info("shutdown: removed %d sightings", removed)
        if api_client is not None:
            await api_client.close()


async def _publish(publisher: Publisher) -> None:
    """Adopt what our report lists already (a restart), then publish."""
    adopted = await publisher.adopt_report()
    if adopted:
        log.info("adopted %d sightings from our GatewayReport", adopted)
    await publisher.run()


def _healthz(rt: Runtime) -> Answer:
    health = rt.source.health
    body = {
        "node": rt.settings.node,
        "scanner": {"healthy": health.healthy, "reason": health.reason, "mode": health.mode},
        "devicesRegistered": len(rt.registry.devices),
        "registrySynced": rt.registry.synced or rt.settings.dry_run,
        "devicesPresent": rt.tracker.present_count(),
        "apiserverReachable": rt.publisher.reachable if rt.publisher else None,
        "leaseRenewedAt": rt.lease.renewed_wall if rt.lease else None,
        "deadTasks": rt.tasks.dead,
        "time": time.time(),
    }
    # Unhealthy = the radio side cannot work, or a loop died (a restart cures that);
    # an apiserver outage is not cured by a restart.
    ok = health.healthy and rt.tasks.healthy
    return Answer(200 if ok else 503, "application/json", orjson.dumps(body))


def _metrics(rt: Runtime) -> Answer:
    _sync_gauges(rt)  # the gauges up to date at each scrape
    return Answer(200, CONTENT_TYPE_LATEST, generate_latest(rt.metrics.registry))


@dataclass(slots=True, eq=False)
class MonitorApp:
    """The Runtime, started and stopped as one (`running`, or `cli.serve` with HTTP)."""

    runtime: Runtime
    _ctx: contextlib.AbstractAsyncContextManager[None] | None = None

    def routes(self) -> dict[str, Route]:
        rt = self.runtime
        return {"/healthz": lambda: _healthz(rt), "/metrics": lambda: _metrics(rt)}

    async def start(self) -> None:
        assert self._ctx is None, "started twice"
        ctx = _monitor_ctx(self.runtime)
        await ctx.__aenter__()
        self._ctx = ctx

    async def stop(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            await ctx.__aexit__(None, None, None)


def create_app(settings: Settings) -> MonitorApp:
    tracker = Tracker(settings.effective_tracker())
    if settings.rssi_offset is not None:
        tracker.set_offset(settings.rssi_offset)
    return MonitorApp(Runtime(settings, Metrics(), Registry(), tracker, _source(settings)))


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Runtime]:
    """Start the monitor without serving HTTP (tests, demo, several gateways in one process)."""
    app = create_app(settings)
    await app.start()
    try:
        yield app.runtime
    finally:
        await app.stop()
