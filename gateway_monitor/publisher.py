"""Publishing what this gateway hears in its own GatewayReport, one merge patch a write.

The report is one object per gateway node, named as the node, that only this node's
monitor may write (docs/gateway-writes.md, section 1). Every write replaces the whole
list (every device heard now) under the field manager ``cloud4iot-gateway-monitor/<node>``
(gateway_monitor/report.py): one writer per object, so no other gateway can plant,
co-own or lock an entry of ours (issue 24). Writing an empty list gives every entry up.

Per device the plan decides when a write is worth it (arrival, departure, an RSSI step,
a heartbeat); one write then carries every device, so a gateway writes at most once per
due moment, not once per device. While this gateway's Lease is renewed
(gateway_monitor/lease.py) readers count its entries fresh from the Lease, and the
heartbeat is a 5-minute safety refresh: at rest the report is not written. Without a
renewed Lease (the previous release's extender, or a Lease we cannot renew) it is
10 s, keeping lastSeen inside the policy's sightingMaxAge as before.

``PublishPlan`` is the pure part (what to send and when); ``Publisher`` does the I/O and
keeps the latest wanted state through apiserver outages, sending it when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cloud4iot.devices import GROUP, REPORT_MAX_SIGHTINGS, REPORT_PLURAL, VERSION, parse_time
from cloud4iot.vocabulary import GATEWAY_LABEL
from gateway_monitor.kubeapi import http_status
from gateway_monitor.report import own_sightings, report_body, write_report

log = logging.getLogger(__name__)

LIVENESS_CHECK = 2.0  # seconds: how soon a lapsed Lease brings the heartbeat back
MIN_WAIT = 0.05  # seconds: the shortest sleep of the publisher's loop


@dataclass(frozen=True, slots=True)
class Sighting:
    rssi: int
    last_seen: float  # wall clock, epoch seconds


@dataclass(frozen=True, slots=True)
class PublishConfig:
    min_interval: float = 1.0  # per device: never publish more often than this
    step: int = 2  # dB change of the smoothed RSSI that is worth a publish
    # Without a live Lease (an extender of the previous release reads lastSeen, or our
    # Lease cannot be renewed): refresh lastSeen well inside sightingMaxAge (30 s).
    heartbeat: float = 10.0
    # With our Lease renewed, readers count our entries fresh while it is: the report is
    # rewritten only on change, plus this safety refresh. 60 s, not KEP-589's 5 min for
    # Nodes: a report deleted and re-created empty (its node relabelled, an admin) while
    # nothing is due makes a live gateway's devices "away" until it (found in review,
    # 2026-12-07: with 300 s, `whenDeviceAway: park` parked them after 120 s). It costs
    # only quiet gateways a write a minute; a busy one writes every few seconds anyway.
    lease_heartbeat: float = 60.0
    # With our Lease renewed, an RSSI step below `urgent_step` dB may wait for the
    # gateway's next write, at most `coalesce` seconds (a step of `urgent_step` or more,
    # an arrival and a departure never wait). Off by default (0 s): the write bound at
    # hospital density is `report_interval` (a whole report at most every 2 s: <= 30
    # writes a minute per gateway, 0.72 per device per minute with 50 devices and the
    # Lease), not this; held 2-5 dB steps cost the nearest decision more than they
    # saved (a walk's approaching gateway held up to 10 s; replays of the flat: p90
    # deficit 5.8 -> 4.6 dB, and a stationary pair's held step made it flip,
    # BENCHMARKS.md "The nearest decision on the Lease path"). It saves writes only at
    # sparse sites, where a gateway hears few devices.
    urgent_step: int = 6
    coalesce: float = 0.0
    # With our Lease renewed, two writes of the report are at least this far apart,
    # whatever is due (arrivals, departures, urgent steps wait for it): one write per
    # gateway carries them all. A gateway hears ~150 noisy entries (its own 50 wearables
    # and its neighbours'); some entry's noise crosses `urgent_step` nearly every second,
    # so without this bound a gateway wrote ~60 times a minute at rest (issue 23 item 2,
    # docs/gateway-writes.md "Hospital scale").
    report_interval: float = 2.0
    adopt_grace: float = 30.0  # keep an entry found at start-up this long before removing
    max_rate: float = 20.0  # applies per second for the whole gateway (protects the apiserver)

    def __post_init__(self) -> None:
        if (
            self.min_interval < 0
            or self.heartbeat <= 0
            or self.lease_heartbeat <= 0
            or self.max_rate <= 0
            or self.step < 1
            or self.urgent_step < self.step
            or self.coalesce < 0
            or self.report_interval < 0
        ):
            raise ValueError(
                "publish settings: min_interval >= 0, heartbeats, max_rate > 0, step >= 1,"
                " urgent_step >= step, coalesce >= 0, report_interval >= 0"
            )


class Reason(StrEnum):
    ARRIVAL = "arrival"
    DEPARTURE = "departure"
    STEP = "step"
    HEARTBEAT = "heartbeat"


@dataclass(slots=True)
class _Entry:
    desired: Sighting | None = None
    published: Sighting | None = None
    last_publish: float | None = None
    retry_at: float = 0.0
    failures: int = 0
    adopted_until: float = 0.0  # entry found on the server at start-up; removal waits
    uncertain: bool = False  # an apply failed in flight: it may have reached the server


@dataclass(slots=True)
class PublishPlan:
    """Decides, per device, when a sighting or its removal must be sent. Pure.

    Each entry keeps the time it becomes due (its reason and its rate limit together,
    both only ever become true as time passes), so asking what is due or when to wake
    costs one ``min`` over floats instead of a ``reason`` per device: the publisher asks
    after every advert, and at 50 devices that scan was the monitor's hottest path.
    """

    config: PublishConfig = field(default_factory=PublishConfig)
    entries: dict[str, _Entry] = field(default_factory=dict)
    _due_at: dict[str, float] = field(default_factory=dict)
    _soonest: float | None = None  # min of _due_at; None = recompute
    heartbeat: float = 0.0  # in force: config.heartbeat, or lease_heartbeat (set_live)
    live: bool = False  # our Lease is renewed: lease heartbeat, small steps coalesced
    last_write: float = -math.inf  # of the whole report (small steps ride the next one)
    max_listed: int = REPORT_MAX_SIGHTINGS  # the CRD's maxItems for status.sightings
    omitted: int = 0  # devices heard but left out of the last report() (past max_listed)

    def __post_init__(self) -> None:
        self.heartbeat = self.heartbeat or self.config.heartbeat

    def set_live(self, live: bool) -> None:
        """Our Lease is renewed (or no longer): every due time moves."""
        if live == self.live and self.heartbeat:
            return
        self.live = live
        self.heartbeat = self.config.lease_heartbeat if live else self.config.heartbeat
        for device in list(self.entries):
            self._update(device)
        self._soonest = None

    def _step_from(self, diff: float) -> float:
        """From when an RSSI step of `diff` dB (>= step) is worth a write."""
        if not self.live or diff >= self.config.urgent_step:
            return -math.inf
        return self.last_write + self.config.coalesce

    def _update(self, device: str) -> None:
        entry = self.entries.get(device)
        if entry is None:
            if self._due_at.pop(device, None) is not None:
                self._soonest = None
            return
        at = max(self._reason_from(entry), self._earliest(entry))
        old = self._due_at.get(device)
        self._due_at[device] = at
        if self._soonest is not None:
            if at <= self._soonest:
                self._soonest = at
            elif old is not None and old <= self._soonest:
                self._soonest = None

    def _reason_from(self, entry: _Entry) -> float:
        """From when ``reason`` is not None (inf: not without new input)."""
        want, have = entry.desired, entry.published
        if want is None:
            if have is None and not entry.uncertain:
                return math.inf
            return entry.adopted_until
        if have is None or entry.last_publish is None:
            return -math.inf
        beat = entry.last_publish + self.heartbeat
        diff = abs(want.rssi - have.rssi)
        if diff >= self.config.step:
            return min(self._step_from(diff), beat)
        return beat

    def _min_due(self) -> float:
        if self._soonest is None:
            self._soonest = min(self._due_at.values(), default=math.inf)
        return self._soonest

    def want(self, device: str, sighting: Sighting | None) -> None:
        """Record the latest state; ``None`` = this gateway does not hear the device."""
        entry = self.entries.get(device)  # (setdefault would build an _Entry per advert)
        if entry is None:
            entry = self.entries[device] = _Entry()
        entry.desired = sighting
        if sighting is None and entry.published is None and not entry.uncertain:
            del self.entries[device]  # never made it to the server: nothing to take back
        self._update(device)

    def adopt(self, device: str, sighting: Sighting, now: float) -> None:
        """Our entry already exists on the server (e.g. the monitor restarted)."""
        entry = self.entries.setdefault(device, _Entry())
        if entry.last_publish is None:
            entry.published = sighting
            entry.adopted_until = now + self.config.adopt_grace
        self._update(device)

    def forget(self, device: str) -> None:
        """The Device is gone: take its entry back like a departure. Dropping it here
        left it listed on the server until some other device's write, or forever on a
        quiet gateway (a Device re-created under the same name inherited it)."""
        entry = self.entries.get(device)
        if entry is not None:
            entry.adopted_until = 0.0
            self.want(device, None)

    def reason(self, device: str, now: float) -> Reason | None:
        """Why ``device`` would need a publish at ``now``, ignoring rate limits."""
        entry = self.entries.get(device)
        if entry is None:
            return None
        want, have = entry.desired, entry.published
        if want is None:
            if (have is None and not entry.uncertain) or now < entry.adopted_until:
                return None
            return Reason.DEPARTURE
        if have is None:
            return Reason.ARRIVAL
        diff = abs(want.rssi - have.rssi)
        # The same sums as _reason_from, so both agree to the last bit.
        if diff >= self.config.step and (
            entry.last_publish is None or now >= self._step_from(diff)
        ):
            return Reason.STEP
        if entry.last_publish is None or now >= entry.last_publish + self.heartbeat:
            return Reason.HEARTBEAT
        return None

    def earliest(self, device: str) -> float:
        """The first time the rate limit and retry backoff allow a publish."""
        return self._earliest(self.entries[device])

    def _earliest(self, entry: _Entry) -> float:
        allowed = entry.retry_at
        if entry.last_publish is not None:
            allowed = max(allowed, entry.last_publish + self.config.min_interval)
        if self.live:
            allowed = max(allowed, self.last_write + self.config.report_interval)
        return allowed

    def due(self, now: float) -> list[tuple[str, Reason]]:
        if self._min_due() > now:
            return []
        out = []
        for device, at in self._due_at.items():
            if at <= now:
                why = self.reason(device, now)
                if why is not None:  # always, by construction (tests/gateway_monitor)
                    out.append((device, why))
        return out

    def next_wakeup(self, now: float) -> float | None:
        """When something may become due without new input (rate limit, heartbeat, grace)."""
        soonest = self._min_due()
        return None if soonest == math.inf else max(now, soonest)

    def sent(self, device: str, sighting: Sighting | None, now: float) -> None:
        entry = self.entries.get(device)
        if entry is None:
            return
        entry.published = sighting
        entry.last_publish = now
        entry.failures = 0
        entry.retry_at = 0.0
        entry.adopted_until = 0.0
        entry.uncertain = False
        if sighting is None and entry.desired is None:
            del self.entries[device]  # nothing left to say about it
        self._update(device)

    def failed(self, device: str, now: float, delay: float, *, attempted: bool = False) -> None:
        """Back off; ``attempted`` = a sighting was in flight and may have been stored."""
        entry = self.entries.get(device)
        if entry is not None:
            entry.failures += 1
            entry.retry_at = now + delay
            entry.uncertain = entry.uncertain or attempted
            self._update(device)

    def report(self, now: float) -> dict[str, Sighting]:
        """Every entry our report lists if we write it at ``now``: what we hear, plus an
        entry found at start-up while its grace lasts; the strongest `max_listed` when
        there are more (`omitted` counts the rest)."""
        out: dict[str, Sighting] = {}
        for device, entry in self.entries.items():
            if entry.desired is not None:
                out[device] = entry.desired
            elif entry.published is not None and now < entry.adopted_until:
                out[device] = entry.published
        self.omitted = max(0, len(out) - self.max_listed)
        if self.omitted:
            # The CRD refuses a longer list (422), and a refused write would freeze
            # the whole report. The weakest are the least likely nearest to us; each
            # stays due (an arrival) and is listed once it is among the strongest.
            strongest = heapq.nlargest(
                self.max_listed, out.items(), key=lambda kv: (kv[1].rssi, kv[0])
            )
            out = dict(strongest)
        return out

    def sent_report(self, listed: Mapping[str, Sighting], now: float) -> None:
        """The whole report was written with ``listed``: what it listed is now published.

        What the server got, not what we want now: adverts go on arriving while the
        write is in flight, and a change among them must still be sent (found in review,
        2026-12-07: it waited for the heartbeat, then 300 s)."""
        self.last_write = now
        for device, on_server in listed.items():
            if device not in self.entries:  # dropped in flight (no longer heard, forgotten)
                self.entries[device] = _Entry(published=on_server)  # so it is taken back
        for device in list(self.entries):
            entry = self.entries[device]
            held = listed.get(device)
            if held is not None and entry.desired is None and now < entry.adopted_until:
                continue  # an adopted entry kept through its grace, unchanged
            self.sent(device, held, now)
        if self.live:  # every entry waits for report_interval after this write
            for device in list(self.entries):
                self._update(device)
            self._soonest = None

    def present(self) -> list[str]:
        """Devices whose entry may exist on the server (for removal at shutdown)."""
        return [d for d, e in self.entries.items() if e.published is not None or e.uncertain]


# One report write: the most urgent reason among the entries it carried, and whether it
# landed (a write carries every due entry: counting per entry inflated the write rate).
PublishHook = Callable[[Reason, bool], None]
_URGENCY = (Reason.ARRIVAL, Reason.DEPARTURE, Reason.STEP, Reason.HEARTBEAT)


def primary_reason(due: list[tuple[str, Reason]]) -> Reason:
    """The most urgent reason of a write's due entries (arrival first)."""
    reasons = {why for _, why in due}
    return next((r for r in _URGENCY if r in reasons), Reason.HEARTBEAT)


class Publisher:
    """Runs the plan against the apiserver; one request at a time per gateway."""

    def __init__(
        self,
        api: Any,
        node: str,
        plan: PublishPlan | None = None,
        *,
        backoff: Callable[[int], float],
        on_result: PublishHook = lambda *_: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
        liveness: Callable[[], bool] | None = None,
    ) -> None:
        self.api = api
        # Whether our Lease is renewed (gateway_monitor/lease.py): then the report is
        # written on change only; None = no Lease (a replay), the heartbeat always.
        self.liveness = liveness
        # Injected with the clock: a replay on a virtual clock (replay/) must not wait.
        self.sleep = sleep
        self.node = node
        self.plan = plan or PublishPlan()
        self.backoff = backoff
        self.on_result = on_result
        self.clock = clock
        self.wall = wall  # the report's observedAt
        self.reachable = True
        self._failures = 0  # report writes failed in a row
        self._omitting = False  # the last report left devices out (logged once)
        self._wake = asyncio.Event()
        self._last_send = -float("inf")
        # When `run` wakes by itself next (its timeout; inf = not waiting on one, e.g. a
        # replay, which calls `flush` itself: every update wakes it). An update that
        # makes nothing due before then need not wake it: with the Lease renewed nearly
        # every advert is such an update (writes wait for report_interval), and a
        # wake-up per advert was much of the monitor's own CPU at 100 adverts/s
        # (BENCHMARKS.md "Gateway monitor: RSS and CPU").
        self._asleep_until = math.inf

    def update(self, device: str, sighting: Sighting | None) -> None:
        self.plan.want(device, sighting)
        self._wake_if_sooner()

    def adopt(self, device: str, sighting: Sighting) -> None:
        self.plan.adopt(device, sighting, self.clock())
        self._wake_if_sooner()

    def wait(self, now: float) -> float | None:
        """How long ``run`` sleeps at ``now`` unless woken (None: until woken): until the
        plan's next wake-up, at least MIN_WAIT, at most LIVENESS_CHECK with a Lease."""
        wakeup = self.plan.next_wakeup(now)
        timeout = None if wakeup is None else max(MIN_WAIT, wakeup - now)
        if self.liveness is not None:  # notice our Lease lapsing (heartbeat again)
            timeout = LIVENESS_CHECK if timeout is None else min(timeout, LIVENESS_CHECK)
        return timeout

    def waits_until(self, at: float) -> None:
        """The loop that runs us sleeps until ``at`` unless woken (inf: until woken).
        ``run`` says so itself; a replay, which keeps the wake-ups, says it for it."""
        self._asleep_until = at

    def _wake_if_sooner(self) -> None:
        if self._wake.is_set():
            return
        until = self._asleep_until
        if until != math.inf:
            wakeup = self.plan.next_wakeup(self.clock())
            if wakeup is None or wakeup >= until:
                return  # run wakes by then anyway, and finds the same due
        self._wake.set()

    def forget(self, device: str) -> None:
        self.plan.forget(device)

    def take_wake(self) -> bool:
        """Whether an update arrived since the last call (a replay's stand-in for the
        wake-up that ``run`` waits for); clears it."""
        woken = self._wake.is_set()
        self._wake.clear()
        return woken

    def _heartbeat(self) -> None:
        self.plan.set_live(self.liveness is not None and self.liveness())

    async def run(self) -> None:
        while True:
            # Clear before looking, so an update() arriving during a send wakes us at once.
            self._wake.clear()
            await self.flush()
            now = self.clock()
            if self.plan.due(now):
                continue
            timeout = self.wait(now)
            self.waits_until(math.inf if timeout is None else now + timeout)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            finally:
                self.waits_until(math.inf)

    async def flush(self) -> None:
        """Send what is due now (the body of ``run``; a replay calls it on its clock).

        One write for everything due: the whole report, every device we hear."""
        self._heartbeat()
        due = self.plan.due(self.clock())
        if not due:
            return
        # Space writes out so a crowd of arrivals cannot burst at the apiserver.
        gap = self._last_send + 1.0 / self.plan.config.max_rate - self.clock()
        if gap > 0:
            await self.sleep(gap)
        self._last_send = self.clock()
        await self._send(due)

    async def _send(self, due: list[tuple[str, Reason]]) -> bool:
        listed = self.plan.report(self.clock())
        if self.plan.omitted and not self._omitting:
            log.warning(
                "GatewayReport %s: %d heard devices beyond the report's %d entries are left"
                " out (the weakest); not logged again while it lasts",
                self.node,
                self.plan.omitted,
                self.plan.max_listed,
            )
        self._omitting = self.plan.omitted > 0
        body = report_body(
            self.node, {d: (s.rssi, s.last_seen) for d, s in listed.items()}, self.wall()
        )
        try:
            await write_report(self.api, self.node, body)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status = http_status(exc)
            if status is None:  # connection refused, timeouts, TLS: the apiserver is away
                self._fail(due, listed, server_down=True)
                log.warning("apply of GatewayReport %s failed: %s", self.node, type(exc).__name__)
                return False
            self._fail(due, listed, server_down=status >= 500)
            if status == 404:
                log.warning(
                    "no GatewayReport %s yet: the elected extender makes one for each node"
                    " labelled %s; retrying",
                    self.node,
                    GATEWAY_LABEL,
                )
            else:
                log.warning(
                    "apply of GatewayReport %s failed: HTTP %s %s",
                    self.node,
                    status,
                    getattr(exc, "reason", ""),
                )
            return False
        if not self.reachable:
            log.info("apiserver reachable again; resyncing sightings")
        self.reachable = True
        self._failures = 0
        self.plan.sent_report(listed, self.clock())
        self.on_result(primary_reason(due), True)
        return True

    def _fail(
        self, due: list[tuple[str, Reason]], listed: Mapping[str, Sighting], *, server_down: bool
    ) -> None:
        """The report was not written: every entry waits for the next try (backed off)."""
        now = self.clock()
        self.on_result(primary_reason(due), False)
        self._failures += 1
        delay = self.backoff(self._failures)
        if server_down:
            self.reachable = False
        for name in list(self.plan.entries):
            # Refused (4xx): nothing was stored. Otherwise it may have been.
            self.plan.failed(name, now, delay, attempted=server_down and name in listed)

    async def remove_all(self, within: float = 5.0) -> int:
        """Give up every entry we may own (shutdown): one write of an empty report.
        Returns how many entries were removed."""
        present = self.plan.present()
        if not present:
            return 0
        for device in present:
            self.plan.want(device, None)
            entry = self.plan.entries.get(device)
            if entry is not None:
                entry.adopted_until = 0.0
        try:
            async with asyncio.timeout(within):
                ok = await self._send([(d, Reason.DEPARTURE) for d in present])
        except TimeoutError:
            ok = False
        if not ok:
            log.warning("shutdown: could not remove our sightings in %.0fs", within)
        return len(present) if ok else 0

    async def adopt_report(self) -> int:
        """Adopt what our report lists already (the monitor restarted): each entry stays
        for the plan's grace unless we hear the device again. Returns how many."""
        try:
            obj = await self.api.get_cluster_custom_object_status(
                GROUP, VERSION, REPORT_PLURAL, self.node
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status = http_status(exc)
            if status is not None:
                if status != 404:
                    log.warning("reading GatewayReport %s failed: HTTP %s", self.node, status)
                return 0
            log.warning("reading GatewayReport %s failed: %s", self.node, type(exc).__name__)
            return 0
        found = own_sightings(obj)
        for device, (rssi, seen) in found.items():
            self.adopt(device, Sighting(rssi=rssi, last_seen=parse_time(seen) or self.wall()))
        return len(found)
