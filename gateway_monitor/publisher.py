"""Publishing this gateway's own entry of ``status.sightings`` with server-side apply.

Each gateway applies a Device holding only its own sighting under the field manager
``cloud4iot-gateway-monitor/<node>``; the list is a map keyed by ``node``, so gateways
never overwrite each other. Applying an empty list gives our entry up.

``PublishPlan`` is the pure part (what to send and when); ``Publisher`` does the I/O and
keeps the latest wanted state through apiserver outages, sending it when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cloud4iot.devices import (
    API_VERSION,
    APPLY_PATCH,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    gateway_field_manager,
    rfc3339,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sighting:
    rssi: int
    last_seen: float  # wall clock, epoch seconds


@dataclass(frozen=True, slots=True)
class PublishConfig:
    min_interval: float = 1.0  # per device: never publish more often than this
    step: int = 2  # dB change of the smoothed RSSI that is worth a publish
    heartbeat: float = 10.0  # refresh lastSeen well inside the policy's sightingMaxAge (30 s)
    adopt_grace: float = 30.0  # keep an entry found at start-up this long before removing
    max_rate: float = 20.0  # applies per second for the whole gateway (protects the apiserver)

    def __post_init__(self) -> None:
        if self.min_interval < 0 or self.heartbeat <= 0 or self.max_rate <= 0 or self.step < 1:
            raise ValueError(
                "publish settings: min_interval >= 0, heartbeat, max_rate > 0, step >= 1"
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

    def _update(self, device: str) -> None:
        entry = self.entries.get(device)
        if entry is None:
            if self._due_at.pop(device, None) is not None:
                self._soonest = None
            return
        at = max(self._reason_from(entry), self.earliest(device))
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
        if have is None or abs(want.rssi - have.rssi) >= self.config.step:
            return -math.inf
        if entry.last_publish is None:
            return -math.inf
        return entry.last_publish + self.config.heartbeat

    def _min_due(self) -> float:
        if self._soonest is None:
            self._soonest = min(self._due_at.values(), default=math.inf)
        return self._soonest

    def want(self, device: str, sighting: Sighting | None) -> None:
        """Record the latest state; ``None`` = this gateway does not hear the device."""
        entry = self.entries.setdefault(device, _Entry())
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
        self.entries.pop(device, None)
        self._update(device)

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
        if abs(want.rssi - have.rssi) >= self.config.step:
            return Reason.STEP
        # The same sum as _reason_from, so both agree to the last bit.
        if entry.last_publish is None or now >= entry.last_publish + self.config.heartbeat:
            return Reason.HEARTBEAT
        return None

    def earliest(self, device: str) -> float:
        """The first time the rate limit and retry backoff allow a publish."""
        entry = self.entries[device]
        allowed = entry.retry_at
        if entry.last_publish is not None:
            allowed = max(allowed, entry.last_publish + self.config.min_interval)
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

    def present(self) -> list[str]:
        """Devices whose entry may exist on the server (for removal at shutdown)."""
        return [d for d, e in self.entries.items() if e.published is not None or e.uncertain]


def apply_body(device: str, node: str, sighting: Sighting | None) -> dict[str, Any]:
    """The Device we apply: only our own sighting, or none to give our entry up."""
    entries = []
    if sighting is not None:
        entries.append(
            {"node": node, "rssi": sighting.rssi, "lastSeen": rfc3339(sighting.last_seen)}
        )
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": device},
        "status": {"sightings": entries},
    }


async def apply_sighting(api: Any, device: str, node: str, sighting: Sighting | None) -> None:
    """One server-side apply on the status subresource under this node's field manager."""
    await api.patch_cluster_custom_object_status(
        GROUP,
        VERSION,
        PLURAL,
        device,
        apply_body(device, node, sighting),
        field_manager=gateway_field_manager(node),
        force=True,  # our node's entry is ours, even if someone edited it by hand
        _content_type=APPLY_PATCH,
    )


PublishHook = Callable[[str, Reason | None, bool], None]  # device, reason, ok


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
    ) -> None:
        self.api = api
        # Injected with the clock: a replay on a virtual clock (replay/) must not wait.
        self.sleep = sleep
        self.node = node
        self.plan = plan or PublishPlan()
        self.backoff = backoff
        self.on_result = on_result
        self.clock = clock
        self.reachable = True
        self._outage_failures = 0
        self._wake = asyncio.Event()
        self._last_send = -float("inf")

    def update(self, device: str, sighting: Sighting | None) -> None:
        self.plan.want(device, sighting)
        self._wake.set()

    def adopt(self, device: str, sighting: Sighting) -> None:
        self.plan.adopt(device, sighting, self.clock())
        self._wake.set()

    def forget(self, device: str) -> None:
        self.plan.forget(device)

    def take_wake(self) -> bool:
        """Whether an update arrived since the last call (a replay's stand-in for the
        wake-up that ``run`` waits for); clears it."""
        woken = self._wake.is_set()
        self._wake.clear()
        return woken

    async def run(self) -> None:
        while True:
            # Clear before looking, so an update() arriving during a send wakes us at once.
            self._wake.clear()
            await self.flush()
            now = self.clock()
            if self.plan.due(now):
                continue
            wakeup = self.plan.next_wakeup(now)
            timeout = None if wakeup is None else max(0.05, wakeup - now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def flush(self) -> None:
        """Send what is due now (the body of ``run``; a replay calls it on its clock)."""
        for device, why in self.plan.due(self.clock()):
            # Space applies out so a crowd of arrivals cannot burst at the apiserver.
            gap = self._last_send + 1.0 / self.plan.config.max_rate - self.clock()
            if gap > 0:
                await self.sleep(gap)
            self._last_send = self.clock()
            await self._send(device, why)

    async def _send(self, device: str, why: Reason | None) -> bool:
        from kubernetes.aio.client.exceptions import ApiException

        entry = self.plan.entries.get(device)
        if entry is None:
            return True
        sighting = entry.desired
        try:
            await apply_sighting(self.api, device, self.node, sighting)
        except asyncio.CancelledError:
            raise
        except ApiException as exc:
            if exc.status == 404:  # the Device is gone: nothing to publish on
                self.plan.forget(device)
                self.on_result(device, why, False)
                return False
            self._fail(device, sighting, server_down=exc.status is not None and exc.status >= 500)
            log.warning("apply on Device %s failed: HTTP %s %s", device, exc.status, exc.reason)
            return False
        except Exception as exc:  # connection refused, timeouts, TLS: the apiserver is away
            self._fail(device, sighting, server_down=True)
            log.warning("apply on Device %s failed: %s", device, type(exc).__name__)
            return False
        if not self.reachable:
            log.info("apiserver reachable again; resyncing sightings")
        self.reachable = True
        self._outage_failures = 0
        self.plan.sent(device, sighting, self.clock())
        self.on_result(device, why, True)
        return True

    def _fail(self, device: str, attempted: Sighting | None, *, server_down: bool) -> None:
        now = self.clock()
        self.on_result(device, None, False)
        if server_down:
            # Hold every device back, not just this one: the next try probes for all.
            self.reachable = False
            self._outage_failures += 1
            delay = self.backoff(self._outage_failures)
            for name in self.plan.entries:
                self.plan.failed(
                    name, now, delay, attempted=name == device and attempted is not None
                )
        else:
            entry = self.plan.entries.get(device)
            # Rejected (4xx): the apiserver stored nothing, so nothing is uncertain.
            self.plan.failed(device, now, self.backoff((entry.failures if entry else 0) + 1))

    async def remove_all(self, within: float = 5.0) -> int:
        """Give up every entry we may own (shutdown); returns how many were removed."""
        removed = 0

        async def _all() -> None:
            nonlocal removed
            for device in self.plan.present():
                self.plan.want(device, None)
                if await self._send(device, Reason.DEPARTURE):
                    removed += 1

        try:
            async with asyncio.timeout(within):
                await _all()
        except TimeoutError:
            log.warning("shutdown: could not remove all sightings in %.0fs", within)
        return removed
