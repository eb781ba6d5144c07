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
write is logged, counted and retried next tick without holding up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from extender.controllers.nearest_plan import (
    NearestWrite,
    Written,
    due_devices,
    plan_nearest,
)
from extender.devices import (
    API_VERSION,
    APPLY_PATCH,
    EXTENDER_FIELD_MANAGER,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    rfc3339,
)
from extender.policy.store import PolicyStore
from extender.scoring.nearest import NearestState
from extender.state.snapshot import DeviceFacts
from extender.state.store import StateStore

log = logging.getLogger(__name__)

FIELD_MANAGER = EXTENDER_FIELD_MANAGER
NUDGE_ANNOTATION = "cloud4iot.io/proximity-changed"
MERGE_PATCH = "application/merge-patch+json"
TICK = 1.0  # re-evaluate pending challengers even when no Device event arrives
SWEEP = 5.0  # decide every device again at least this often


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
    _retry: set[str] = field(default_factory=set)  # writes that failed: due again

    async def run(self, changed: asyncio.Event) -> None:
        """One leadership term: runs until cancelled."""
        # Another leader may have written since our last term: start from the objects.
        self.states.clear()
        self.written.clear()
        self._retry.clear()
        self._last_sweep = float("-inf")
        while True:
            # Not wait_for: on 3.11 it swallows cancellation (lost leadership) when the
            # event fires at the same moment, and this writer would keep writing.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):
                    await changed.wait()
            changed.clear()
            try:
                await self.step(time.time())
            except Exception:
                log.exception("nearest-gateway step failed; retrying next tick")

    def _due(self, devices: Mapping[str, DeviceFacts], now: float) -> Iterable[str]:
        """All devices on a sweep (time alone can change a decision: a sighting ages
        out) or a policy change; else only what changed and pending challengers."""
        digest = self.policy.current.digest
        if now - self._last_sweep >= SWEEP or digest != self._policy_digest:
            self._last_sweep, self._policy_digest = now, digest
            return list(devices)
        return due_devices(devices, self._previous, self.states, self._retry)

    async def step(self, now: float) -> None:
        spec = self.policy.current.policy.spec
        devices = self.store.snapshot.devices
        for gone in (set(self.states) | self._retry) - set(devices):
            self.states.pop(gone, None)
            self.written.pop(gone, None)
            self._retry.discard(gone)
        due = list(self._due(devices, now))
        self._previous = devices
        self.decisions += len(due)
        plan = plan_nearest(devices, due, self.states, self.written, now, spec)
        self.states.update(plan.states)
        self.written.update(plan.written)
        for write in plan.writes:
            await self._apply(write, now)

    async def _apply(self, write: NearestWrite, now: float) -> None:
        name, state = write.device, write.state
        try:
            await self._write(name, state, write.last_seen, write.rssi)
        except Exception as exc:  # this device is retried next tick; the others go on
            self.failures += 1
            self._retry.add(name)
            log.warning("device %s: could not write status.nearest: %s", name, exc)
            return
        self._retry.discard(name)
        self.written[name] = Written(state.node, write.rssi, before=write.before)
        if write.moved:
            self.changes += 1
            log.info("device %s: nearest gateway %s -> %s", name, write.shown, state.node)
            if state.node is not None:
                await self._nudge(state.node, now)

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
            log.warning("could not nudge node %s: %s", node, exc)
