"""Leader election on a coordination.k8s.io/v1 Lease, client-go style.

Written here because the client's bundled `kubernetes.aio.leaderelection` fails
its own argument validation on create (`pretty=True` where a string is expected,
kubernetes 37.0.2). The rules are client-go's:

* A candidate takes the Lease when it does not exist, has no holder, is already
  ours, or is expired. Expiry is judged only on this process's monotonic clock
  (the event loop's, which is time.monotonic() on asyncio's loops):
  another holder's lease has expired when the record we read (holder,
  renewTime, resourceVersion) has not changed for the record's
  leaseDurationSeconds since we first observed it. The holder's renewTime is a
  wall-clock stamp for people reading the object; clock skew between replicas
  does not matter.
* Writes carry the resourceVersion we read, so when two candidates race the
  apiserver accepts one and answers 409 to the other, which does not lead.
* A renewal counts from the moment its attempt *started*, every attempt is cut
  off at the renew deadline (renew_deadline after the start of the last
  successful renewal), and leading stops as soon as that deadline passes. Since
  renew_deadline < lease_duration and a follower's clock for our record starts
  no earlier than our renewal started, we stop before anyone can take over.
  A leader whose renewal reads another live holder (the Lease deleted and
  recreated by someone else, or its holder edited by hand) stops at once: then
  two leaders overlap for at most one retry period.
* If the lead task crashes, the crash is logged with its traceback and we back
  off (exponentially, capped) before contending again; the Lease then expires.
* On shutdown (the election task is cancelled) a leader hands the Lease back
  (no holder, as client-go's ReleaseOnCancel), after its lead task has stopped,
  so a rolling restart does not leave status.nearest unwritten for a lease term.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0  # per API call; the whole attempt is bounded by the renew deadline too
MAX_CRASH_BACKOFF = 60.0
CRASH_RESET = 60.0  # a lead task that ran this long before crashing starts the backoff over

# (holder, renewTime, resourceVersion): a change means the holder is still renewing.
Observed = tuple[str | None, Any, str | None]


def _now() -> float:
    # The loop's clock, not time.monotonic() directly: the same clock on a real loop,
    # and the tests run the elector on virtual time, so its margins are exact there.
    return asyncio.get_running_loop().time()


@dataclass(slots=True)
class LeaseElector:
    coordination: Any  # kubernetes.aio CoordinationV1Api
    namespace: str
    name: str
    identity: str
    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    _observed: Observed | None = field(default=None, init=False, repr=False)
    _observed_at: float = field(default=0.0, init=False, repr=False)
    # The last attempt found the Lease held by another live holder (or lost the race
    # to create it): a leader stops at once, not at its renew deadline.
    taken: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration")

    def _observe(self, lease: Any) -> None:
        spec, meta = lease.spec, lease.metadata
        record: Observed = (
            spec.holder_identity if spec else None,
            spec.renew_time if spec else None,
            meta.resource_version if meta else None,
        )
        if record != self._observed:
            self._observed = record
            # Taken after the response arrived: the holder's write, and so the start of
            # its renewal, happened no later than this.
            self._observed_at = _now()

    async def try_acquire_or_renew(self) -> bool:
        """One read and at most one write. Raises on API errors other than 404/409."""
        from kubernetes.aio.client import V1Lease
        from kubernetes.aio.client.exceptions import ApiException

        now = datetime.now(UTC)  # only stamped into the record, never compared
        self.taken = False
        try:
            lease = await self.coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            fresh = V1Lease.from_dict(
                {
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {
                        "holderIdentity": self.identity,
                        "leaseDurationSeconds": self.lease_duration,
                        "acquireTime": now,
                        "renewTime": now,
                        "leaseTransitions": 0,
                    },
                }
            )
            try:
                created = await self.coordination.create_namespaced_lease(
                    self.namespace, fresh, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as race:
                if race.status == 409:  # another candidate created it first
                    self.taken = True
                    return False
                raise
            self._observe(created)
            return True

        self._observe(lease)
        spec = lease.spec
        holder = spec.holder_identity
        duration = spec.lease_duration_seconds or self.lease_duration
        if holder and holder != self.identity:
            if _now() < self._observed_at + duration:
                self.taken = True
                return False
            log.info("lease %s/%s: %s expired, taking over", self.namespace, self.name, holder)
        if holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            spec.holder_identity = self.identity
        spec.lease_duration_seconds = self.lease_duration
        spec.renew_time = now
        try:
            # Carries the resourceVersion we read: 409 if anyone wrote since.
            replaced = await self.coordination.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._observe(replaced)
        return True

    async def attempt(self, within: float | None = None) -> bool:
        """try_acquire_or_renew cut off after `within` seconds; any failure is False."""
        if within is not None and within <= 0:
            return False
        try:
            # Not wait_for: on 3.11 it swallows our own cancellation when the call
            # has just finished, and a cancelled elector must stop.
            async with asyncio.timeout(within):
                return await self.try_acquire_or_renew()
        except TimeoutError:
            log.warning("lease %s/%s: attempt timed out", self.namespace, self.name)
            return False
        except Exception as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    async def release(self) -> None:
        """Give the Lease up if we still hold it; best effort, bounded (shutdown)."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                lease = await self.coordination.read_namespaced_lease(
                    self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
                )
                if lease.spec is None or lease.spec.holder_identity != self.identity:
                    return
                lease.spec.holder_identity = None
                lease.spec.renew_time = datetime.now(UTC)
                await self.coordination.replace_namespaced_lease(
                    self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT
                )
                log.info("lease %s/%s released", self.namespace, self.name)
        except Exception as exc:  # it will expire instead
            log.warning("lease %s/%s not released: %s", self.namespace, self.name, exc)

    async def acquire(self) -> float:
        """Contend until we hold the Lease; returns the monotonic start of the winning attempt."""
        while True:
            start = _now()
            if await self.attempt(self.renew_deadline) and (_now() < start + self.renew_deadline):
                return start
            await asyncio.sleep(self.retry_period)


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def run_elected(
    elector: LeaseElector,
    lead: Callable[[], Coroutine[Any, Any, None]],
    on_change: Callable[[bool], None] | None = None,
) -> None:
    """Run `lead()` only while holding the Lease; contend again after losing it."""
    crashes = 0
    while True:
        renewed = await elector.acquire()
        log.info("%s leads (lease %s/%s)", elector.identity, elector.namespace, elector.name)
        began = _now()
        task = asyncio.create_task(lead(), name="elected")
        if on_change:
            on_change(True)
        shutting_down = False
        try:
            await _renew_while_leading(elector, task, renewed)
        except asyncio.CancelledError:
            shutting_down = True
            raise
        finally:
            task.cancel()
            try:
                # wait() neither raises the task's error nor swallows our own cancellation.
                await asyncio.wait({task})
            finally:
                if on_change:
                    on_change(False)
                if shutting_down:
                    await elector.release()
        if task.cancelled():
            log.warning("%s stopped leading: lease not renewed in time", elector.identity)
            crashes = 0
            continue
        error = task.exception()
        if error is None:
            log.warning("%s: lead task returned; contending again", elector.identity)
            crashes = 0
            await asyncio.sleep(elector.retry_period)
            continue
        # Capped: 2**1024 seconds is past a float (the task died after ~17 h of crashes).
        crashes = 1 if _now() - began >= CRASH_RESET else min(crashes + 1, 32)
        backoff = min(elector.retry_period * 2**crashes, MAX_CRASH_BACKOFF)
        log.error(
            "%s: lead task crashed; contending again in %.1fs",
            elector.identity,
            backoff,
            exc_info=error,
        )
        await asyncio.sleep(backoff)


async def _renew_while_leading(
    elector: LeaseElector, task: asyncio.Task[None], renewed: float
) -> None:
    """Return when `task` ends or when the renew deadline passes without a renewal.

    `renewed` is the monotonic start of the last successful attempt; the deadline
    is measured from it, and each attempt is cut off at the deadline.
    """
    while True:
        deadline = renewed + elector.renew_deadline
        pause = min(elector.retry_period, deadline - _now())
        if pause > 0:
            await asyncio.wait({task}, timeout=pause)
        if task.done() or _now() >= deadline:
            return
        start = _now()
        if await elector.attempt(deadline - start):
            renewed = start
        elif elector.taken:
            # Someone else holds it now (the Lease was deleted and recreated, or its
            # holder edited): leading on to the deadline would make two leaders.
            log.warning("%s: lease held by another; stepping down", elector.identity)
            return
