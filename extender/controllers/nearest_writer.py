"""The single elected writer of Device `status.nearest`, and the scheduler's nudge.

Every extender replica scores from `status.nearest`, so exactly one of them (the
holder of a coordination Lease) decides it. When the decision changes, the writer
also touches the gateway Node with an annotation: kube-scheduler re-queues
unschedulable pods on cluster events it watches (Nodes, not our Devices), so
without the nudge a pod waiting for its wearable would wait for the periodic
flush (minutes) instead of seconds.

Each leadership term (each `run()`) starts from what the Device objects show, not
from a previous term's memory: another leader may have written in between. What
to write is planned by `nearest_plan` (pure); this module applies it. A failed
write is counted and retried without holding up the others, backing off per
device (1 s doubling to 60 s, reset by a success); it is logged in one line once
per device, target and kind of error, not on every retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud4iot.devices import (
    API_VERSION,
    APPLY_PATCH,
    EXTENDER_FIELD_MANAGER,
    GROUP,
    KIND,
    MERGE_PATCH,
    PLURAL,
    VERSION,
    rfc3339,
)
from cloud4iot.policy.store import PolicyStore
from cloud4iot.vocabulary import NUDGE_ANNOTATION
from extender.controllers.nearest_plan import (
    NearestWrite,
    Written,
    due_devices,
    plan_nearest,
)
from extender.scoring.nearest import NearestState
from extender.state.snapshot import DeviceFacts
from extender.state.store import StateStore

log = logging.getLogger(__name__)

FIELD_MANAGER = EXTENDER_FIELD_MANAGER
# Re-evaluate pending challengers this often even when no Device event arrives: the
# evidence rule's move is written at the first pass after the sum reaches switchCostDbS,
# so the tick is part of the decision lag (0.5 s: robot run p90 deficit 4.76 -> 4.52 dB
# on the flat's recordings, BENCHMARKS.md); only pending devices are decided on a tick.
TICK = 0.5
WRITE_CONCURRENCY = 16  # status writes in flight at once
SWEEP = 5.0  # decide every device again at least this often
BACKOFF_FIRST = 1.0  # after a device's first failed write, wait this long
BACKOFF_MAX = 60.0  # doubling up to this


@dataclass(slots=True)
class Failing:
    """A device whose last write failed: when to try again, and what was logged."""

    delay: float
    next_at: float
    attempts: int = 1
    logged: set[tuple[str | None, str]] = field(default_factory=set)  # (target, error kind)

    def due(self, now: float) -> bool:
        return now >= self.next_at


def error_kind(exc: BaseException) -> str:
    """What went wrong, coarsely: "HTTP 422", "TimeoutError"."""
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if isinstance(status, int) else type(exc).__name__


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A one-line reason: an API error's status, reason and Status message (never its
    headers and body, which the client's str() includes); anything else's first line."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        text = f"HTTP {status} {getattr(exc, 'reason', None) or ''}".rstrip()
        message = _status_message(getattr(exc, "body", None))
        if message:
            text += f": {message}"
    else:
        first = str(exc).strip().splitlines()
        text = f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _status_message(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body:
        return ""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    message = doc.get("message") if isinstance(doc, dict) else None
    return message if isinstance(message, str) else ""


@dataclass(slots=True)
class NearestWriter:
    custom: Any  # kubernetes.aio CustomObjectsApi
    core: Any  # kubernetes.aio CoreV1Api
    policy: PolicyStore
    store: StateStore
    states: dict[str, NearestState] = field(default_factory=dict)
    written: dict[str, Written] = field(default_factory=dict)
    changes: int = 0
    failures: int = 0
    decisions: int = 0  # decide_nearest calls (how much work the steps do)
    # Only what changed is decided again between sweeps: at 10,000 Devices a full
    # pass costs ~100 ms, and Device events can wake the writer 10 times a second.
    _previous: Mapping[str, DeviceFacts] = field(default_factory=dict)
    _last_sweep: float = float("-inf")
    _policy_digest: str = ""
    failing: dict[str, Failing] = field(default_factory=dict)  # writes that failed
    # Devices whose decision raised on their last pass, and the error kind (logged once).
    undecidable: dict[str, str] = field(default_factory=dict)
    # The time `run` decides at; injected so a test can run the live loop on a virtual
    # clock (tests/replay/test_live_equals_replay.py).
    clock: Callable[[], float] = time.time
    # While leading: when the last pass completed (the term's start before the first);
    # None out of a term. /metrics shows its age (the "nearest decisions lagging" alert).
    last_pass: float | None = None

    def lag(self) -> float:
        """Seconds since the last completed pass while leading; 0 when not leading."""
        return 0.0 if self.last_pass is None else max(0.0, self.clock() - self.last_pass)

    def failing_decisions(self) -> int:
        """Devices whose nearest decision raised on their last pass; 0 when not leading."""
        return 0 if self.last_pass is None else len(self.undecidable)

    def failing_writes(self) -> int:
        """Devices whose status.nearest write is failing now; 0 when not leading."""
        return 0 if self.last_pass is None else len(self.failing)

    async def run(self, changed: asyncio.Event) -> None:
        """One leadership term: runs until cancelled."""
        # Another leader may have written since our last term: start from the objects.
        self.states.clear()
        self.written.clear()
        self.failing.clear()
        self.undecidable.clear()
        self._last_sweep = float("-inf")
        self.last_pass = self.clock()
        try:
            while True:
                # Not wait_for: on 3.11 it swallows cancellation (lost leadership) when
                # the event fires at the same moment, and this writer would keep writing.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK):
                        await changed.wait()
                changed.clear()
                try:
                    await self.step(self.clock())
                except Exception:
                    log.exception("nearest-gateway step failed; retrying next tick")
                else:
                    self.last_pass = self.clock()
        finally:
            self.last_pass = None

    def _due(self, devices: Mapping[str, DeviceFacts], now: float) -> Iterable[str]:
        """All devices on a sweep (time alone can change a decision: a sighting ages
        out) or a policy change; else only what changed and pending challengers."""
        digest = self.policy.current.digest
        if now - self._last_sweep >= SWEEP or digest != self._policy_digest:
            self._last_sweep, self._policy_digest = now, digest
            return list(devices)
        retry = {name for name, f in self.failing.items() if f.due(now)}
        return due_devices(devices, self._previous, self.states, retry)

    async def step(self, now: float) -> None:
        spec = self.policy.current.policy.spec
        devices = self.store.snapshot.devices
        for gone in (set(self.states) | set(self.failing) | set(self.undecidable)) - set(devices):
            self.states.pop(gone, None)
            self.written.pop(gone, None)
            self.failing.pop(gone, None)
            self.undecidable.pop(gone, None)
        due = list(self._due(devices, now))
        self._previous = devices
        self.decisions += len(due)
        plan = plan_nearest(devices, due, self.states, self.written, now, spec)
        self.states.update(plan.states)
        self.written.update(plan.written)
        self._undecidable(plan.states, plan.errors)
        planned = {w.device for w in plan.writes}
        for name in due:
            failing = self.failing.get(name)
            if failing is not None and failing.due(now) and name not in planned:
                del self.failing[name]  # nothing left to write (e.g. another leader did)
        # Devices backing off are planned again when due (nothing was recorded for them).
        todo = [w for w in plan.writes if (f := self.failing.get(w.device)) is None or f.due(now)]
        # Several writes in flight (each device has at most one): one at a time, a new
        # leader's first pass over 10,000 Devices is 10,000 round trips (minutes at the
        # tens of milliseconds a busy apiserver takes per write).
        slots = asyncio.Semaphore(WRITE_CONCURRENCY)
        arrived: set[str] = set()

        async def apply(write: NearestWrite) -> None:
            async with slots:
                if await self._apply(write, now) and write.state.node is not None:
                    arrived.add(write.state.node)

        await asyncio.gather(*(apply(w) for w in todo))
        # One nudge per gateway a pass, however many devices moved to it (a ward's
        # round of moves is one Node write per gateway, each fanned out to every
        # Node watcher), after the decisions it announces are written.
        for node in sorted(arrived):
            await self._nudge(node, now)

    def _undecidable(self, decided: Iterable[str], errors: Mapping[str, Exception]) -> None:
        """Keep the devices whose decision raised, logging each device and error once."""
        for name in decided:
            if self.undecidable.pop(name, None) is not None:
                log.info("device %s: nearest gateway decided again", name)
        for name, exc in errors.items():
            kind = error_kind(exc)
            if self.undecidable.get(name) != kind:
                log.error(
                    "device %s: deciding its nearest gateway failed (the others go on; "
                    "not logged again)",
                    name,
                    exc_info=exc,
                )
            self.undecidable[name] = kind

    async def _apply(self, write: NearestWrite, now: float) -> bool:
        """Write one decision; True when it moved the device to another gateway."""
        name, state = write.device, write.state
        try:
            await self._write(name, state, write.last_seen, write.rssi)
        except Exception as exc:  # this device is retried later; the others go on
            self.failures += 1
            self._failed(name, state.node, exc, now)
            return False
        recovered = self.failing.pop(name, None)
        if recovered is not None:
            log.info(
                "device %s: status.nearest written after %d failed attempt(s)",
                name,
                recovered.attempts,
            )
        self.written[name] = Written(state.node, write.rssi, before=write.before, at=now)
        if write.moved:
            self.changes += 1
            log.info("device %s: nearest gateway %s -> %s", name, write.shown, state.node)
        return write.moved

    def _failed(self, name: str, target: str | None, exc: Exception, now: float) -> None:
        failing = self.failing.get(name)
        if failing is None:
            failing = self.failing[name] = Failing(BACKOFF_FIRST, now + BACKOFF_FIRST)
        else:
            failing.attempts += 1
            failing.delay = min(failing.delay * 2, BACKOFF_MAX)
            failing.next_at = now + failing.delay
        key = (target, error_kind(exc))
        if key in failing.logged:
            log.debug("device %s: write failed again (%s)", name, key[1])
            return
        failing.logged.add(key)
        log.warning(
            "device %s: could not %s: %s (retrying, backing off to %.0f s; not logged again)",
            name,
            f"set status.nearest to {target}" if target else "remove status.nearest",
            one_line(exc),
            BACKOFF_MAX,
        )

    async def _write(
        self, name: str, state: NearestState, last_seen: float | None, rssi: float | None
    ) -> None:
        if state.node is None:
            # No gateway hears it: remove status.nearest. Not an apply of `status: {}`:
            # when nothing else is in status, that leaves `status: null`, which the CRD
            # refuses (422) and the stale decision would stay forever.
            await self.custom.patch_cluster_custom_object_status(
                GROUP,
                VERSION,
                PLURAL,
                name,
                {"status": {"nearest": None}},
                _content_type=MERGE_PATCH,
                _request_timeout=10,
            )
            return
        nearest: dict[str, Any] = {"node": state.node, "since": rfc3339(state.since or time.time())}
        if rssi is not None:
            nearest["rssi"] = round(rssi)
        if last_seen is not None:
            nearest["lastSeen"] = rfc3339(last_seen)
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name},
            "status": {"nearest": nearest},
        }
        # Server-side apply: we own status.nearest only; gateways own their sightings.
        await self.custom.patch_cluster_custom_object_status(
            GROUP,
            VERSION,
            PLURAL,
            name,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_PATCH,
            _request_timeout=10,
        )

    async def _nudge(self, node: str, now: float) -> None:
        patch = {"metadata": {"annotations": {NUDGE_ANNOTATION: rfc3339(now)}}}
        try:
            await self.core.patch_node(
                node, patch, _content_type="application/merge-patch+json", _request_timeout=10
            )
        except Exception as exc:  # the node may be gone; the decision still stands
            log.warning("could not nudge node %s: %s", node, one_line(exc))
