"""Leader election on a coordination.k8s.io/v1 Lease.

Written here because the client's bundled `kubernetes.aio.leaderelection` fails
its own argument validation on create (`pretty=True` where a string is expected,
kubernetes 37.0.2). The algorithm is client-go's: take the Lease when it is free
or expired, renew it while leading, stop leading when renewals fail for longer
than the renew deadline (before another replica may take over), and use the
object's resourceVersion so two candidates cannot both win.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LeaseElector:
    coordination: Any  # kubernetes.aio CoordinationV1Api
    namespace: str
    name: str
    identity: str
    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    async def try_acquire_or_renew(self) -> bool:
        from kubernetes.aio.client import V1Lease
        from kubernetes.aio.client.exceptions import ApiException

        now = datetime.now(UTC)
        try:
            lease = await self.coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=5
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
                await self.coordination.create_namespaced_lease(
                    self.namespace, fresh, _request_timeout=5
                )
            except ApiException as race:
                if race.status == 409:  # another candidate created it first
                    return False
                raise
            return True

        spec = lease.spec
        holder = spec.holder_identity
        renewed = spec.renew_time or spec.acquire_time
        duration = spec.lease_duration_seconds or self.lease_duration
        if (
            holder
            and holder != self.identity
            and renewed is not None
            and renewed.timestamp() + duration > now.timestamp()
        ):
            return False
        if holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            spec.holder_identity = self.identity
        spec.lease_duration_seconds = self.lease_duration
        spec.renew_time = now
        try:
            await self.coordination.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=5
            )
        except ApiException as exc:
            if exc.status == 409:  # someone else updated it since we read it
                return False
            raise
        return True

    async def attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def run_elected(
    elector: LeaseElector,
    lead: Callable[[], Coroutine[Any, Any, None]],
    on_change: Callable[[bool], None] | None = None,
) -> None:
    """Run `lead()` only while holding the Lease; contend again after losing it."""
    while True:
        if not await elector.attempt():
            await asyncio.sleep(elector.retry_period)
            continue
        log.info("%s leads (lease %s/%s)", elector.identity, elector.namespace, elector.name)
        if on_change:
            on_change(True)
        task = asyncio.create_task(lead(), name="elected")
        last_renewal = time.monotonic()
        try:
            while time.monotonic() - last_renewal < elector.renew_deadline:
                await asyncio.sleep(elector.retry_period)
                if task.done():
                    break
                if await elector.attempt():
                    last_renewal = time.monotonic()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if on_change:
                on_change(False)
        log.warning("%s stopped leading", elector.identity)
