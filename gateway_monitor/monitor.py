"""The path every advert takes after the scanner: Device lookup -> tracker -> publisher.

Live scanning, replays and the duty-cycle measurement all go through ``Monitor``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from gateway_monitor.discovery import Discovery
from gateway_monitor.metrics import Metrics
from gateway_monitor.publisher import Sighting
from gateway_monitor.recorder import Recorder
from gateway_monitor.registry import DeviceSpec, Registry
from gateway_monitor.scanner import Advert
from gateway_monitor.tracker import Tracker, Transition, Update

log = logging.getLogger(__name__)


class SightingSink(Protocol):
    def update(self, device: str, sighting: Sighting | None) -> None: ...

    def adopt(self, device: str, sighting: Sighting) -> None: ...

    def forget(self, device: str) -> None: ...


class Monitor:
    def __init__(
        self,
        node: str,
        tracker: Tracker,
        registry: Registry,
        sink: SightingSink,
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float] = time.time,
        recorder: Recorder | None = None,
        on_transition: Callable[[float, str, Transition], None] | None = None,
        discovery: Discovery | None = None,
    ) -> None:
        self.node = node
        self.tracker = tracker
        self.registry = registry
        self.sink = sink
        self.metrics = metrics
        self._tracked = metrics.adverts.labels("tracked")  # every advert: resolve the child once
        self.clock = clock  # the advert source's timeline (trace seconds on replays)
        self.wall = wall
        self.recorder = recorder  # --record: what replay reads
        self._record_anchor: float | None = None
        self.on_transition = on_transition  # (source time, device, transition): a bench's log
        self.discovery = discovery  # DeviceClass matching of unregistered adverts (issue 25)
        registry.listeners.append(self)

    def on_advert(self, advert: Advert) -> None:
        self.hear(advert.address, advert.rssi, advert.t, advert)

    def hear(self, address: str, rssi: int, t: float, advert: Advert | None = None) -> None:
        """One advert's reading (``on_advert``'s body): replay calls it with the three
        fields it has, without building an Advert per reception (a twentieth of its
        time); a stranger's Advert is built then, for discovery."""
        device = self.registry.lookup(address)
        if device is None:
            if self.discovery is not None and self.discovery.offer(
                advert if advert is not None else Advert(address, rssi, t)
            ):
                # A DeviceClass match: a candidate in our report, not tracked or logged.
                self.metrics.adverts.labels("candidate").inc()
                return
            # Privacy: strangers are counted, never tracked, logged or published.
            self.metrics.adverts.labels("dropped").inc()
            return
        self._tracked.inc()
        if self.recorder is not None:
            # The source's clock anchored once to the wall clock: gateways' recordings
            # line up, and a sped-up replay is recorded at its own pace.
            if self._record_anchor is None:
                self._record_anchor = self.wall() - self.clock()
            # The Device, and its identity address when this one is a rotating one:
            # replay then sees one device across rotations, not one per address.
            spec = self.registry.devices.get(device)
            identity = spec.address if spec is not None else None
            self.recorder.add(self._record_anchor + t, address, rssi, device, identity)
        self._emit(self.tracker.observe(device, rssi, t))

    def tick(self) -> None:
        for update in self.tracker.tick(self.clock()):
            self._emit(update)

    def _emit(self, update: Update) -> None:
        state = update.state
        if update.transition is not None:
            self.metrics.transitions.labels(update.transition.value).inc()
            self.metrics.present.set(self.tracker.present_count())
            if self.on_transition is not None:
                self.on_transition(self.clock(), state.key, update.transition)
            log.info("%s %s (rssi %s)", state.key, update.transition.value, state.rssi)
        if state.present and state.rssi is not None:
            # The advert's time on the source clock, mapped to the wall clock now.
            seen = self.wall() - max(0.0, self.clock() - state.last_seen)
            self.sink.update(state.key, Sighting(rssi=state.rssi, last_seen=seen))
        elif update.transition is Transition.DEPARTED:
            self.sink.update(state.key, None)

    def devices_changed(self, upserted: Iterable[DeviceSpec], removed: Iterable[str]) -> None:
        for spec in upserted:
            self.tracker.set_thresholds(spec.name, spec.enter, spec.leave)
            if spec.own_rssi is not None and self.tracker.state(spec.name) is None:
                self.sink.adopt(spec.name, Sighting(rssi=spec.own_rssi, last_seen=self.wall()))
        for name in removed:
            self.tracker.forget(name)
            self.sink.forget(name)
        self.metrics.registered.set(len(self.registry.devices))
        self.metrics.present.set(self.tracker.present_count())
