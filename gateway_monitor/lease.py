"""This gateway's liveness: a coordination.k8s.io Lease renewed every few seconds.

Kubernetes moved node heartbeats out of Node status into one small Lease per node
(KEP-589); we do the same for gateways (docs/gateway-writes.md, section 2): the Lease is
named exactly as the node, lives in the monitors' own namespace, holds the node as
``holderIdentity`` and is renewed every ``renew`` seconds with a ``leaseDurationSeconds``
of ``duration``. Readers count this gateway's GatewayReport entries as fresh while they
see the Lease renewed, so the report itself is written only when what we hear changes.

The monitor creates its own Lease when missing (as kubelet does in kube-node-lease) and
then only updates it; it may write no other (RBAC: get/create/update leases in its
namespace; the admission policy cloud4iot-gateway-leases: only the Lease named as the
node claim of its pod-bound token, holding that node). A failed renewal is retried every
``retry`` seconds (a refused connection costs the apiserver nothing), not backed off to
30 s: after an outage the readers give every gateway one lease duration to renew.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud4iot.devices import GATEWAY_NAMESPACE
from gateway_monitor.kubeapi import http_status, resource_version

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = GATEWAY_NAMESPACE
# Where kubelet mounts the ServiceAccount's namespace in every pod.
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    renew: float = 10.0  # seconds between renewals (kubelet's node lease: 10 s)
    duration: int = 40  # leaseDurationSeconds: the renewals a reader may miss, x renew
    retry: float = 2.0  # after a failed renewal

    def __post_init__(self) -> None:
        if not (self.retry > 0 and self.renew > 0 and self.duration >= 2 * self.renew):
            raise ValueError(
                "lease settings: renew and retry > 0, duration >= 2 x renew "
                f"(got renew {self.renew}, duration {self.duration}, retry {self.retry})"
            )


def default_namespace(file: Path = SA_NAMESPACE_FILE) -> str:
    """The pod's own namespace (the ServiceAccount file), else the shipped one."""
    try:
        text = file.read_text().strip()
    except OSError:
        return DEFAULT_NAMESPACE
    return text or DEFAULT_NAMESPACE


def micro_time(epoch: float) -> str:
    """A Lease's MicroTime (RFC 3339 with microseconds, UTC)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(
    node: str, namespace: str, now: float, duration: int, resource_version: str | None = None
) -> dict[str, Any]:
    """The whole Lease as we write it (create, or update with `resource_version`)."""
    meta: dict[str, Any] = {
        "name": node,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/name": "cloud4iot-gateway-monitor"},
    }
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": duration,
            "renewTime": micro_time(now),
        },
    }


class LeaseRenewer:
    """Creates this gateway's Lease if missing and renews it; one request per renewal."""

    def __init__(
        self,
        coordination: Any,  # gateway_monitor.kubeapi.KubeApi (or kubernetes.aio's)
        node: str,
        namespace: str,
        config: LeaseConfig | None = None,
        *,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.api = coordination
        self.node, self.namespace = node, namespace
        self.config = config or LeaseConfig()
        self.wall, self.sleep = wall, sleep
        # Elapsed time, for `healthy`: monotonic, since a gateway's wall clock steps (NTP
        # setting a Pi without an RTC: an hour back kept a lapsed Lease "healthy" for an
        # hour, found in review 2026-12-07). A virtual wall (replay, tests) is both.
        self.clock = clock or (time.monotonic if wall is time.time else wall)
        self.resource_version: str | None = None  # of our last write; None: read first
        self.renewed_at: float | None = None  # `clock` at the last successful renewal
        self.renewed_wall: float | None = None  # its renewTime (wall clock), for /healthz
        self.renewals = 0
        self.failures = 0  # in a row
        self._last_error: str | None = None

    @property
    def healthy(self) -> bool:
        """Whether the readers see us alive (renewed within the lease duration)."""
        return self.renewed_at is not None and (
            self.clock() - self.renewed_at <= self.config.duration
        )

    async def run(self) -> None:
        while True:
            ok = await self.renew()
            await self.sleep(self.config.renew if ok else self.config.retry)

    async def renew(self) -> bool:
        """One renewal (a create the first time); True when it landed."""
        now, began = self.wall(), self.clock()
        try:
            if self.resource_version is None:
                self.resource_version = await self._current()
            body = lease_body(
                self.node, self.namespace, now, self.config.duration, self.resource_version
            )
            if self.resource_version is None:
                written = await self.api.create_namespaced_lease(self.namespace, body)
            else:
                written = await self.api.replace_namespaced_lease(self.node, self.namespace, body)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status = http_status(exc)
            if status is None:  # refused, timeouts, TLS: the apiserver is away
                self._failed(type(exc).__name__)
                return False
            # 409: someone else wrote it (a conflict, or it was created meanwhile): read
            # it again next time. 404 on update: it was deleted, create it.
            if status in (404, 409):
                self.resource_version = None
            self._failed(f"HTTP {status} {getattr(exc, 'reason', '')}")
            return False
        self.resource_version = resource_version(written)
        self.renewed_at, self.renewed_wall = began, now
        self.renewals += 1
        if self.failures:
            log.info("Lease %s/%s renewed again", self.namespace, self.node)
        self.failures, self._last_error = 0, None
        return True

    async def _current(self) -> str | None:
        """The resourceVersion of our Lease on the server; None when there is none."""
        try:
            lease = await self.api.read_namespaced_lease(self.node, self.namespace)
        except Exception as exc:
            if http_status(exc) == 404:
                return None
            raise
        return resource_version(lease)

    def _failed(self, error: str) -> None:
        self.failures += 1
        if error != self._last_error:  # one line per kind of error, not per retry
            log.warning(
                "renewing Lease %s/%s failed: %s (retrying every %.0fs)",
                self.namespace,
                self.node,
                error,
                self.config.retry,
            )
        self._last_error = error
