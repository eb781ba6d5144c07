"""The live decision chain on a virtual clock: no apiserver, no waiting.

Each gateway runs what its monitor runs (``Monitor`` -> ``Tracker`` -> ``Publisher``
with its ``PublishPlan``); the publisher's applies land in an in-memory stand-in for
the Device objects (server-side apply of one gateway's sighting entry, keyed by node,
as the CRD's list map does), which is read back with the extender's own
``device_facts``; the elected writer (``NearestWriter.step``) decides and writes
``status.nearest`` there. So replay and the live system share every decision.

Timing: the chain is stepped as the live loops would run on the same clock (the
test tests/replay/test_live_equals_replay.py runs those loops on a virtual event loop
and gets the same decisions): a gateway's publisher sends as soon as its monitor
updated something and again when its plan's next wake-up is due (``Publisher.run``);
a Device change reaches the writer through the reflector's coalescing (at most one
snapshot per ``PUBLISH_INTERVAL``) and the writer steps on each snapshot or ``TICK``
after its last step (``NearestWriter.run``); monitors tick every ``MONITOR_TICK``
(the monitor's --tick-interval default). Publishing is never spaced by ``max_rate``
(the publisher's sleep is a no-op): the apiserver's protection is not part of the
decision.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cloud4iot.devices import REPORT_PLURAL
from cloud4iot.policy.loader import LoadedPolicy
from cloud4iot.policy.store import PolicyStore
from extender.controllers.nearest_writer import TICK, NearestWriter
from extender.state.devices import device_facts
from extender.state.kube import PUBLISH_INTERVAL
from extender.state.snapshot import DeviceFacts
from extender.state.store import StateStore
from gateway_monitor.metrics import Metrics
from gateway_monitor.monitor import Monitor
from gateway_monitor.publisher import PublishConfig, Publisher, PublishPlan
from gateway_monitor.registry import DeviceSpec, Registry
from gateway_monitor.scanner import Advert as RadioAdvert
from gateway_monitor.tracker import Tracker, TrackerConfig
from replay.functions import Functions, FunctionStats, LoadSeries
from replay.inputs import Recording

MONITOR_TICK = 0.25  # the monitor app's tick (Settings.tick_interval)
PUBLISHER_MIN_WAIT = 0.05  # Publisher.run never waits less than this for a wake-up
# Replays of CSV recordings (seconds from their start) run at this epoch, so that the
# RFC 3339 times the chain writes are ordinary dates.
EPOCH = 1_700_000_000.0

Timeline = list[tuple[float, str | None]]  # (t, decided gateway) at each change


class VirtualClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _no_sleep(_seconds: float) -> None:
    return None


@dataclass(slots=True)
class DeviceObjects:
    """The Device objects as the apiserver would hold them, status only."""

    clock: VirtualClock
    sightings: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    nearest: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    applies: int = 0

    def patch_status(self, name: str, body: Mapping[str, Any], manager: str | None) -> None:
        """A write of Device `name`'s status (the writer's status.nearest)."""
        self.applies += 1
        status = body.get("status") or {}
        if "nearest" in status:
            if status["nearest"] is None:
                self.nearest.pop(name, None)
            else:
                self.nearest[name] = dict(status["nearest"])
        self.dirty.add(name)

    def patch_report(self, node: str, body: Mapping[str, Any]) -> None:
        """A gateway's apply of its whole GatewayReport: its entry in each Device it lists
        now, none in the others (only labelled gateways' reports count; replay's do)."""
        self.applies += 1
        listed = {
            e["device"]: {"node": node, "rssi": e["rssi"], "lastSeen": e["lastSeen"]}
            for e in (body.get("status") or {}).get("sightings") or []
        }
        for device, own in self.sightings.items():
            if node in own and device not in listed:
                del own[node]
                self.dirty.add(device)
        for device, entry in listed.items():
            self.sightings.setdefault(device, {})[node] = entry
            self.dirty.add(device)

    def facts(self, name: str) -> DeviceFacts:
        obj: dict[str, Any] = {
            "metadata": {"name": name},
            "status": {"sightings": list(self.sightings.get(name, {}).values())},
        }
        if name in self.nearest:
            obj["status"]["nearest"] = self.nearest[name]
        return device_facts(obj, observed_at=self.clock.now)


class _CustomApi:
    """The two calls the publisher and the writer make, applied to DeviceObjects."""

    def __init__(self, objects: DeviceObjects) -> None:
        self.objects = objects

    async def patch_cluster_custom_object_status(
        self, group: str, version: str, plural: str, name: str, body: Any, **kw: Any
    ) -> None:
        if plural == REPORT_PLURAL:
            self.objects.patch_report(name, body)
        else:
            self.objects.patch_status(name, body, kw.get("field_manager"))


class _CoreApi:
    async def patch_node(self, *_: Any, **__: Any) -> None:
        return None  # the scheduler nudge: nothing to wake in a replay


@dataclass(slots=True)
class ChainResult:
    decisions: dict[str, Timeline]  # device -> status.nearest changes
    adverts: int
    applies: int
    seconds: float  # wall time the chain took
    start: float
    end: float
    functions: dict[str, FunctionStats] = field(default_factory=dict)  # by device


@dataclass(slots=True)
class ChainConfig:
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    tail: float = 5.0  # seconds replayed after the last advert
    # A function of this class bound to each device, placed by the scorer and moved by
    # the rebalancer's planner (replay.functions); None: decisions only.
    function_class: str | None = None
    extra_nodes: Mapping[str, str] = field(default_factory=dict)  # name -> tier
    load: LoadSeries | None = None


async def run_chain(
    recording: Recording,
    policy: LoadedPolicy,
    config: ChainConfig | None = None,
    on_step: Callable[[float], None] | None = None,
) -> ChainResult:
    """Replay every advert through the live chain; the decisions it wrote, per device."""
    cfg = config or ChainConfig()
    began = time.perf_counter()
    start, end = recording.span
    offset = EPOCH if start < EPOCH / 2 else 0.0
    clock = VirtualClock(start + offset)
    objects = DeviceObjects(clock)
    api = _CustomApi(objects)
    spec = policy.policy.spec
    specs = [DeviceSpec(name=d, address=a) for d, a in recording.addresses.items()]
    monitors: dict[str, Monitor] = {}
    publishers: dict[str, Publisher] = {}
    for gw in recording.gateways:
        radio = spec.gateways.get(gw)
        tracker_cfg = cfg.tracker
        if radio is not None and "rssi_offset" in radio.model_fields_set:
            tracker_cfg = replace(tracker_cfg, offset=radio.rssi_offset)
        registry = Registry()
        publisher = Publisher(
            api,
            gw,
            PublishPlan(cfg.publish),
            backoff=lambda _n: 1.0,
            clock=clock,
            sleep=_no_sleep,
            wall=clock,
        )
        monitors[gw] = Monitor(
            gw, Tracker(tracker_cfg), registry, publisher, Metrics(), clock=clock, wall=clock
        )
        publishers[gw] = publisher
        registry.replace_all(specs)
    store = StateStore()
    writer = NearestWriter(
        custom=api,
        core=_CoreApi(),
        policy=PolicyStore(path=Path(policy.source), current=policy),
        store=store,
    )
    devices: dict[str, DeviceFacts] = {}
    decisions: dict[str, Timeline] = {d: [] for d in recording.addresses}
    shown: dict[str, str | None] = {}
    wakes: list[tuple[float, str]] = []  # (when, gateway): Publisher.run's timed wake-ups
    wake_at: dict[str, float] = {}
    publish_at = math.inf  # the reflector's pending snapshot publish
    published_at = -math.inf
    writer_at = clock.now + TICK  # the writer's TICK timeout
    monitor_at = clock.now + MONITOR_TICK
    functions = (
        None
        if cfg.function_class is None
        else Functions(
            policy,
            list(recording.addresses),
            recording.gateways,
            cfg.function_class,
            offset,
            start,
            cfg.extra_nodes,
            cfg.load,
        )
    )

    async def flush(gw: str, now: float) -> None:
        nonlocal publish_at
        publisher = publishers[gw]
        publisher.take_wake()
        await publisher.flush()
        wake = publisher.plan.next_wakeup(now)
        if wake is None:
            wake_at.pop(gw, None)
        else:
            wake_at[gw] = at = now + max(PUBLISHER_MIN_WAIT, wake - now)
            heapq.heappush(wakes, (at, gw))
        if objects.dirty and publish_at == math.inf:
            publish_at = max(now, published_at + PUBLISH_INTERVAL)

    def read_back() -> None:
        nonlocal devices
        devices = dict(devices)  # a new mapping: the writer finds changes by identity
        for name in objects.dirty:
            devices[name] = objects.facts(name)
        objects.dirty.clear()
        store.snapshot = store.snapshot.with_devices(devices)

    async def step_writer(now: float) -> None:
        nonlocal writer_at, publish_at
        await writer.step(now)
        writer_at = now + TICK
        for name in objects.dirty:
            node = objects.nearest.get(name, {}).get("node")
            if shown.get(name) != node:
                shown[name] = node
                decisions.setdefault(name, []).append((now - offset, node))
        if objects.dirty and publish_at == math.inf:  # our own writes come back as events
            publish_at = max(now, published_at + PUBLISH_INTERVAL)
        if functions is not None:
            functions.step(now, store.snapshot.devices)
        if on_step is not None:
            on_step(now - offset)

    async def advance(until: float) -> None:
        """Run every timed event (ticks, wake-ups, publishes) due before ``until``
        (adverts of the same instant go first, as the live source's timer did)."""
        nonlocal monitor_at, publish_at, published_at
        while True:
            while wakes and wake_at.get(wakes[0][1]) != wakes[0][0]:
                heapq.heappop(wakes)  # superseded by a later flush
            wake = wakes[0][0] if wakes else math.inf
            now = min(monitor_at, wake, publish_at, writer_at)
            if now >= until:
                return
            clock.now = now
            if now == monitor_at:
                monitor_at += MONITOR_TICK
                for gw, m in monitors.items():
                    m.tick()
                    if publishers[gw].take_wake():
                        await flush(gw, now)
            elif now == wake:
                _, gw = heapq.heappop(wakes)
                del wake_at[gw]
                await flush(gw, now)
            elif now == publish_at:
                publish_at, published_at = math.inf, now
                read_back()
                await step_writer(now)  # the reflector's publish wakes the writer
            else:
                await step_writer(now)

    # A source hands over every advert of one instant before its publisher runs (live:
    # ReplaySource/bleak deliver them in one loop turn), so those flush together.
    heard: dict[str, None] = {}
    at = -math.inf

    async def flush_heard() -> None:
        for gw in heard:
            if publishers[gw].take_wake():
                await flush(gw, at)
        heard.clear()

    for a in recording.adverts:
        t = a.t + offset
        if t > at:
            await flush_heard()
            await advance(t)
            clock.now = at = t
        monitors[a.gateway].on_advert(RadioAdvert(recording.addresses[a.device], a.rssi, t))
        heard[a.gateway] = None
    await flush_heard()
    await advance(end + offset + cfg.tail)
    return ChainResult(
        decisions=decisions,
        adverts=len(recording.adverts),
        applies=objects.applies,
        seconds=time.perf_counter() - began,
        start=start,
        end=end,
        functions={} if functions is None else functions.finish(clock.now),
    )
