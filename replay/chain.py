"""The live decision chain on a virtual clock: no apiserver, no waiting.

Each gateway runs what its monitor runs (``Monitor`` -> ``Tracker`` -> ``Publisher``
with its ``PublishPlan``, its Lease renewed every 10 s, so the report is written on
change only, a gateway's writes ``report_interval`` apart, as live); each write of a gateway's whole
GatewayReport is parsed by the extender's ``report_facts`` into its ``SightingIndex``,
whose ``observe_lease`` keeps a renewing gateway's entries fresh
(docs/gateway-writes.md, section 2); the elected writer (``NearestWriter.step``)
decides on the merged Devices and writes ``status.nearest``, read back by
``device_facts``. So replay and the live system share every decision.

Timing: the chain is stepped as the live loops would run on the same clock (the
test tests/replay/test_live_equals_replay.py runs those loops on a virtual event loop
and gets the same decisions): a gateway's publisher sends as soon as its monitor
updated something and again when its plan's next wake-up is due (``Publisher.run``);
a report, Lease or Device change reaches the writer through its reflector's coalescing
(each at most one snapshot per ``PUBLISH_INTERVAL``) and the writer steps on each
snapshot or ``TICK`` after its last step (``NearestWriter.run``); monitors tick every
``MONITOR_TICK`` (the monitor's --tick-interval default). Publishing is never spaced by ``max_rate``
(the publisher's sleep is a no-op): the apiserver's protection is not part of the
decision.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cloud4iot.devices import REPORT_PLURAL
from cloud4iot.policy.loader import LoadedPolicy
from cloud4iot.policy.store import PolicyStore
from cloud4iot.vocabulary import GATEWAY_LABEL
from extender.controllers.nearest_writer import TICK, NearestWriter
from extender.state.devices import device_facts
from extender.state.kube import PUBLISH_INTERVAL
from extender.state.liveness import LeaseFacts
from extender.state.reports import ReportFacts, SightingIndex, report_facts
from extender.state.snapshot import DeviceFacts, NodeFacts
from extender.state.store import StateStore
from gateway_monitor.lease import LeaseConfig
from gateway_monitor.metrics import Metrics
from gateway_monitor.monitor import Monitor
from gateway_monitor.publisher import PublishConfig, Publisher, PublishPlan
from gateway_monitor.registry import DeviceSpec, Registry
from gateway_monitor.tracker import Tracker, TrackerConfig
from replay.functions import Functions, FunctionStats, LoadSeries
from replay.inputs import Recording

MONITOR_TICK = 0.25  # the monitor app's tick (Settings.tick_interval)
# Replays of CSV recordings (seconds from their start) run at this epoch, so that the
# RFC 3339 times the chain writes are ordinary dates.
EPOCH = 1_700_000_000.0

# The extender's reflectors that feed the Devices snapshot (extender.state.kube).
DEVICES, REPORTS, LEASES = "devices", "gatewayreports", "gateway-leases"
REFLECTORS = (DEVICES, REPORTS, LEASES)

Timeline = list[tuple[float, str | None]]  # (t, decided gateway) at each change


def _later(now: float, step: float) -> float:
    """``now + step``, refusing a time so large the step is lost in rounding (the
    replay's loop made no progress and ran forever; the readers refuse such times)."""
    at = now + step
    if at <= now:
        raise ValueError(f"replay: t={now:.6g} is too large to step by {step} s")
    return at


class VirtualClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _no_sleep(_seconds: float) -> None:
    return None


@dataclass(slots=True)
class ClusterView:
    """What the extender's reflectors would hold, fed by the chain's writes.

    Each gateway's write of its whole GatewayReport is parsed by the extender's own
    ``report_facts`` into its ``SightingIndex``; each gateway's Lease renewal is a
    ``LeaseFacts`` seen by that index (``observe_lease``): entries count as fresh
    while their gateway renews, as live (docs/gateway-writes.md, section 2). The
    writer's status.nearest is the Device object's status, parsed by ``device_facts``.
    ``dirty`` holds which reflector (devices, gatewayreports, gateway-leases) has an
    event not yet published: each coalesces its own publishes, as live.
    """

    clock: VirtualClock
    index: SightingIndex = field(default_factory=SightingIndex)
    reports: dict[str, ReportFacts] = field(default_factory=dict)
    leases: dict[str, LeaseFacts] = field(default_factory=dict)
    nearest: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)  # devices whose nearest was written
    applies: int = 0

    def add_gateways(self, gateways: Sequence[str]) -> None:
        self.index.set_nodes(
            {
                gw: NodeFacts(name=gw, tier="gateway", arch=None, labels={GATEWAY_LABEL: "true"})
                for gw in gateways
            }
        )

    def add_device(self, name: str) -> None:
        self.index.observe_device(name, None, self._device(name))

    def _device(self, name: str) -> DeviceFacts:
        obj: dict[str, Any] = {"metadata": {"name": name}, "status": {}}
        if name in self.nearest:
            obj["status"]["nearest"] = self.nearest[name]
        return device_facts(obj, observed_at=self.clock.now)

    def patch_status(self, name: str, body: Mapping[str, Any], manager: str | None) -> None:
        """A write of Device `name`'s status (the writer's status.nearest)."""
        self.applies += 1
        status = body.get("status") or {}
        if "nearest" in status:
            if status["nearest"] is None:
                self.nearest.pop(name, None)
            else:
                self.nearest[name] = dict(status["nearest"])
        old = self.index.devices.get(name)
        self.index.observe_device(name, old, self._device(name))
        self.changed.add(name)
        self.dirty.add(DEVICES)

    def patch_report(self, node: str, body: Mapping[str, Any]) -> None:
        """A gateway's write of its whole GatewayReport (replay's gateways are labelled)."""
        self.applies += 1
        obj = {"metadata": {"name": node}, "status": body.get("status") or {}}
        new = report_facts(obj, observed_at=self.clock.now)
        self.index.observe_report(node, self.reports.get(node), new)
        self.reports[node] = new
        self.dirty.add(REPORTS)

    def renew_lease(self, node: str, count: int) -> None:
        """The gateway's monitor renewed its Lease (LeaseRenewer, every LeaseConfig.renew)."""
        new = LeaseFacts(
            node=node,
            renew_time=str(count),
            duration=float(LeaseConfig().duration),
            observed_at=self.clock.now,
        )
        self.index.observe_lease(node, self.leases.get(node), new)
        self.leases[node] = new
        self.dirty.add(LEASES)


class _CustomApi:
    """The two calls the publisher and the writer make, applied to the ClusterView."""

    def __init__(self, objects: ClusterView) -> None:
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
    objects = ClusterView(clock)
    gateways = recording.gateways  # a scan of every advert: once, not per Lease renewal
    objects.add_gateways(gateways)
    for name in recording.addresses:
        objects.add_device(name)
    api = _CustomApi(objects)
    spec = policy.policy.spec
    specs = [DeviceSpec(name=d, address=a) for d, a in recording.addresses.items()]
    monitors: dict[str, Monitor] = {}
    publishers: dict[str, Publisher] = {}
    for gw in gateways:
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
            liveness=lambda: True,  # its Lease is renewed (below), as a live monitor's
        )
        monitors[gw] = Monitor(
            gw, Tracker(tracker_cfg), registry, publisher, Metrics(), clock=clock, wall=clock
        )
        publisher.plan.set_live(True)  # as its first flush would (its Lease renews)
        publishers[gw] = publisher
        registry.replace_all(specs)
    store = StateStore()
    writer = NearestWriter(
        custom=api,
        core=_CoreApi(),
        policy=PolicyStore(path=Path(policy.source), current=policy),
        store=store,
        clock=clock,
    )
    decisions: dict[str, Timeline] = {d: [] for d in recording.addresses}
    shown: dict[str, str | None] = {}
    wakes: list[tuple[float, str]] = []  # (when, gateway): Publisher.run's timed wake-ups
    wake_at: dict[str, float] = {}
    # Each reflector's pending snapshot publish and its last (Reflector._schedule_publish).
    publish_at = dict.fromkeys(REFLECTORS, math.inf)
    published_at = dict.fromkeys(REFLECTORS, -math.inf)
    lease_every = LeaseConfig().renew
    lease_at = clock.now  # every monitor renews its Lease at start, then every `renew`
    renewals = 0
    writer_at = clock.now + TICK  # the writer's TICK timeout
    monitor_at = clock.now + MONITOR_TICK
    functions = (
        None
        if cfg.function_class is None
        else Functions(
            policy,
            list(recording.addresses),
            gateways,
            cfg.function_class,
            offset,
            start,
            cfg.extra_nodes,
            cfg.load,
        )
    )

    def schedule(now: float) -> None:
        for name in objects.dirty:
            if publish_at[name] == math.inf:
                publish_at[name] = max(now, published_at[name] + PUBLISH_INTERVAL)
        objects.dirty.clear()

    async def flush(gw: str, now: float) -> None:
        publisher = publishers[gw]
        publisher.take_wake()
        plan = publisher.plan
        wake = plan.next_wakeup(now)
        if wake is not None and wake <= now:  # else its flush would send nothing
            await publisher.flush()
            schedule(now)
        # Publisher.run's own wake-up; an update wakes it sooner only if it makes
        # something due before then.
        timeout = publisher.wait(now)
        at = math.inf if timeout is None else now + timeout
        publisher.waits_until(at)
        if at == math.inf:
            wake_at.pop(gw, None)
        elif wake_at.get(gw) != at:  # an unchanged wake-up is in the heap already
            wake_at[gw] = at
            heapq.heappush(wakes, (at, gw))

    def read_back() -> None:
        # A new mapping each publish (devices_published): the writer finds changes by identity.
        store.snapshot = store.snapshot.with_devices(dict(objects.index.merged))

    async def step_writer(now: float) -> None:
        nonlocal writer_at
        await writer.step(now)
        writer_at = _later(now, TICK)
        for name in objects.changed:
            node = objects.nearest.get(name, {}).get("node")
            if shown.get(name) != node:
                shown[name] = node
                decisions.setdefault(name, []).append((now - offset, node))
        objects.changed.clear()
        schedule(now)  # our own writes come back as events
        if functions is not None:
            functions.step(now, store.snapshot.devices)
        if on_step is not None:
            on_step(now - offset)

    async def advance(until: float) -> None:
        """Run every timed event (ticks, wake-ups, publishes) due before ``until``
        (adverts of the same instant go first, as the live source's timer did)."""
        nonlocal monitor_at, lease_at, renewals
        while True:
            while wakes and wake_at.get(wakes[0][1]) != wakes[0][0]:
                heapq.heappop(wakes)  # superseded by a later flush
            wake = wakes[0][0] if wakes else math.inf
            publish = min(publish_at.values())
            now = min(monitor_at, wake, publish, writer_at, lease_at)
            if now >= until:
                return
            clock.now = now
            if now == lease_at:
                lease_at = _later(now, lease_every)
                renewals += 1
                for gw in gateways:
                    objects.renew_lease(gw, renewals)
                schedule(now)
            elif now == monitor_at:
                monitor_at = _later(now, MONITOR_TICK)
                for gw, m in monitors.items():
                    m.tick()
                    if publishers[gw].take_wake():
                        await flush(gw, now)
            elif now == wake:
                _, gw = heapq.heappop(wakes)
                del wake_at[gw]
                await flush(gw, now)
            elif now == publish:
                for name, at in publish_at.items():
                    if at == now:
                        publish_at[name], published_at[name] = math.inf, now
                read_back()
                await step_writer(now)  # the reflector's publish wakes the writer
            else:
                await step_writer(now)

    # A source hands over every advert of one instant before its publisher runs (live:
    # ReplaySource/bleak deliver them in one loop turn), so those flush together.
    heard: dict[str, None] = {}
    at = -math.inf
    addresses = recording.addresses

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
        monitors[a.gateway].hear(addresses[a.device], a.rssi, t)
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
