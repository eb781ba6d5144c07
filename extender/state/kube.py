"""Kubernetes watches that keep the snapshot's nodes and devices current.

List, then watch from the list's resourceVersion; on 410 Gone relist after a
short pause; on any other error keep serving the last state and retry with
capped exponential backoff (`retry_delay`): 1 s doubling to 30 s, except that a
refused connection (nothing listens: the apiserver is restarting) is retried
every 2 s at most, and an answer saying when to come back (Retry-After, as a
starting apiserver's 429 does) is retried then. With the plain 30 s cap, the
device view once lagged 48 s behind an apiserver back from a 40 s outage
(RELIABILITY.md). Objects are read as raw JSON (orjson), not the client's
models: at 5,000 nodes model deserialisation would dominate the refresh.

Each reflector keeps only the facts placement reads (name -> NodeFacts or
DeviceFacts), never whole objects, and updates one entry per watch event.
Publishing a Snapshot copies that dict, so publishes are coalesced: the first
change after a quiet spell goes out on the next loop turn, later ones at most
every PUBLISH_INTERVAL, so a burst of gateway heartbeats costs a few copies.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import orjson

from cloud4iot.devices import GROUP, PLURAL, REPORT_PLURAL, VERSION
from extender.state.devices import FirstRead, device_facts
from extender.state.liveness import LeaseFacts, lease_facts
from extender.state.reports import ReportFacts, SightingIndex, report_facts
from extender.state.resources import PodUse, UsageIndex, pod_use
from extender.state.snapshot import DeviceFacts, NodeFacts
from extender.state.store import StateStore

log = logging.getLogger(__name__)

WATCH_SECONDS = 240  # server-side watch timeout; the client's is a bit longer
LIST_TIMEOUT = 60.0
MAX_BACKOFF = 30.0  # after errors: 1 s, doubling, capped
# A refused connection costs the apiserver nothing (no process listens), so while
# it is down we knock often and see it back within this long.
REFUSED_BACKOFF = 2.0
RELIST_DELAY = 1.0  # after 410 Gone, doubling while relists keep expiring at once
MAX_RELIST_DELAY = 8.0
PUBLISH_INTERVAL = 0.1  # at most one snapshot per resource per this many seconds

F = TypeVar("F")


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class HttpStatusError(RuntimeError):
    """A list or watch answered with an error status."""

    def __init__(self, message: str, status: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The seconds of a Retry-After header (the apiserver sets it on 429 and some 503s)."""
    try:
        value = float((headers or {}).get("Retry-After", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def is_refused(exc: BaseException) -> bool:
    """A refused connection, however the client wrapped it (aiohttp: `os_error`)."""
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if isinstance(current, ConnectionRefusedError):
            return True
        if id(current) in seen:
            continue
        seen.add(id(current))
        pending += [
            e
            for e in (getattr(current, "os_error", None), current.__cause__, current.__context__)
            if isinstance(e, BaseException)
        ]
    return False


def retry_delay(exc: BaseException, previous: float) -> float:
    """The next retry delay after `exc`, given the previous one (0 after a success).

    Kept from one error to the next, so a server that keeps failing is asked
    less and less often; only a refused connection and a Retry-After shorten it.
    """
    if is_refused(exc):
        return min(REFUSED_BACKOFF, previous * 2 or 1.0)
    if isinstance(exc, HttpStatusError) and exc.retry_after is not None:
        return min(MAX_BACKOFF, max(1.0, exc.retry_after))
    return min(MAX_BACKOFF, previous * 2 or 1.0)


ListCall = Callable[..., Awaitable[Any]]  # a *_without_preload_content list function
Parse = Callable[[Mapping[str, Any], float], F]  # (object, observed_at) -> facts
Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True, eq=False)
class Reflector(Generic[F]):
    """A list+watch loop for one resource, feeding a name -> facts dict.

    `parse` reduces an object to its facts (ValueError = skip it); `publish`
    receives a fresh copy of the whole dict, which it may keep (never mutated).
    """

    name: str
    call: ListCall
    parse: Parse[F]
    publish: Callable[[dict[str, F]], None] | None  # None: readers use `facts` and `observe`
    # The dict key of an object: its name (cluster-scoped), or namespace/name.
    key: Callable[[Mapping[str, Any]], str | None] = lambda obj: object_name(obj)
    # Called per change (key, old, new; None = absent) before the publish, so an
    # index can be kept current in O(1) per event; a relist reports every key.
    observe: Callable[[str, F | None, F | None], None] | None = None
    # Called after each (re)list with the new facts and the time of the list, before
    # the publish: our view resumed (the gateway liveness grace, extender/state/reports).
    on_list: Callable[[Mapping[str, F], float], None] | None = None
    facts: dict[str, F] = field(default_factory=dict)
    synced: bool = False
    last_error: str | None = None
    last_event: float | None = None
    events: int = 0  # watch events applied (bookmarks included)
    unchanged: int = 0  # of those, changes to nothing we keep (not published)
    # Drop MODIFIED events whose facts equal the ones held (Nodes: kubelets report status
    # every 5 minutes). Off where `observe` may act on a write as such (reports, Leases).
    skip_unchanged: bool = False
    publishes: int = 0
    publish_interval: float = PUBLISH_INTERVAL
    sleep: Sleep = asyncio.sleep  # injectable so tests can see the backoff
    _timer: asyncio.TimerHandle | None = field(default=None, init=False, repr=False)
    _published_at: float = field(default=float("-inf"), init=False, repr=False)  # loop time

    async def run(self) -> None:
        error_delay = relist_delay = 0.0
        events_at_list = self.events
        try:
            while True:
                try:
                    version = await self._list()
                    error_delay = 0.0
                    events_at_list = self.events
                    while True:
                        version = await self._watch(version)
                        relist_delay = 0.0  # a watch ran to its timeout: healthy again
                except WatchExpiredError:
                    if self.events != events_at_list:
                        relist_delay = 0.0
                    # Expiring again right after a relist means the apiserver is
                    # compacting or restarting: don't hammer it with full lists.
                    relist_delay = min(MAX_RELIST_DELAY, relist_delay * 2 or RELIST_DELAY)
                    log.info("%s watch expired, relisting in %.0fs", self.name, relist_delay)
                    await self.sleep(relist_delay)
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    error_delay = retry_delay(exc, error_delay)
                    log.warning(
                        "%s list/watch failed (%s); retry in %.0fs", self.name, exc, error_delay
                    )
                    await self.sleep(error_delay * random.uniform(0.8, 1.2))
        finally:
            self._cancel_timer()

    async def _list(self) -> str:
        resp = await self.call(_request_timeout=LIST_TIMEOUT)
        try:
            body = await resp.read()
            if resp.status != 200:
                raise HttpStatusError(
                    f"list {self.name}: HTTP {resp.status}: {body[:200]!r}",
                    resp.status,
                    retry_after(getattr(resp, "headers", None)),
                )
        finally:
            resp.release()
        data = orjson.loads(body)
        del body
        now = time.time()
        facts: dict[str, F] = {}
        for obj in data.get("items") or []:
            name = self.key(obj)
            if not isinstance(name, str):
                log.warning("ignoring %s without a name", self.name)
                continue
            try:
                facts[name] = self.parse(obj, now)
            except ValueError as exc:
                log.warning("ignoring %s %r: %s", self.name, name, exc)
        version: str = data["metadata"]["resourceVersion"]
        old, self.facts = self.facts, facts
        if self.observe is not None:
            for name in old.keys() | facts.keys():
                self.observe(name, old.get(name), facts.get(name))
        if self.on_list is not None:
            self.on_list(facts, now)
        self.synced, self.last_error, self.last_event = True, None, now
        self._publish()
        return version

    async def _watch(self, version: str) -> str:
        resp = await self.call(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=WATCH_SECONDS + 30,
        )
        try:
            if resp.status == 410:
                raise WatchExpiredError
            if resp.status != 200:
                raise HttpStatusError(
                    f"watch {self.name}: HTTP {resp.status}",
                    resp.status,
                    retry_after(getattr(resp, "headers", None)),
                )
            # Split lines ourselves: a Node can exceed aiohttp's readline limit.
            # Parts are joined only once a newline arrives, so a large object
            # spread over many chunks is not rescanned for each one.
            pending: list[bytes] = []
            async for chunk in resp.content.iter_any():
                pending.append(chunk)
                if b"\n" not in chunk:
                    continue
                *lines, rest = b"".join(pending).split(b"\n")
                pending = [rest] if rest else []
                for line in lines:
                    if line.strip():
                        version = self._apply(orjson.loads(line), version)
            # A trailing partial line is a cut-off event: the next watch resumes
            # from the last complete one.
            return version
        finally:
            resp.release()

    def _apply(self, event: Mapping[str, Any], version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpiredError
            raise RuntimeError(f"watch {self.name}: {obj.get('message')}")
        meta = obj.get("metadata") or {}
        new_version: str = meta.get("resourceVersion") or version
        self.events += 1
        name = self.key(obj) if kind != "BOOKMARK" else None
        if not isinstance(name, str):
            return new_version
        now = time.time()
        old = self.facts.get(name)
        new: F | None = None
        if kind == "DELETED":
            if name not in self.facts:  # facts may be None (a ReplicaSet without owner)
                return new_version
            del self.facts[name]
        elif kind in ("ADDED", "MODIFIED"):
            try:
                new = self.parse(obj, now)
            except ValueError as exc:
                log.warning("ignoring %s %s: %s", self.name, name, exc)
                return new_version
            if self.skip_unchanged and new == old:
                # Nothing we keep changed (a node's status report, its conditions or
                # images): no snapshot to publish, and the old facts stay, since their
                # identity is what the scorer's per-node verdicts are cached on.
                self.unchanged += 1
                self.last_event = now
                return new_version
            self.facts[name] = new
        else:
            return new_version
        if self.observe is not None:
            self.observe(name, old, new)
        self.last_event = now
        self._schedule_publish()
        return new_version

    def _schedule_publish(self) -> None:
        if self._timer is not None:
            return  # the pending publish will include this change
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._published_at + self.publish_interval - loop.time())
        self._timer = loop.call_later(delay, self._publish_pending)

    def _publish_pending(self) -> None:
        try:
            self._publish()
        except Exception:
            log.exception("publishing %s failed", self.name)

    def _publish(self) -> None:
        self._cancel_timer()
        self._published_at = asyncio.get_running_loop().time()
        self.publishes += 1
        if self.publish is not None:
            self.publish(dict(self.facts))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def object_name(obj: Mapping[str, Any]) -> str | None:
    name = (obj.get("metadata") or {}).get("name")
    return name if isinstance(name, str) else None


def namespaced_name(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace")
    return f"{namespace}/{name}" if isinstance(name, str) and isinstance(namespace, str) else None


def node_facts(obj: Mapping[str, Any], observed_at: float) -> NodeFacts:
    """NodeFacts of a Node (name, labels, hard taints, unschedulable; the rest is dropped)."""
    return NodeFacts.from_node(obj)


def publish_nodes(store: StateStore, nodes: Mapping[str, NodeFacts]) -> None:
    store.snapshot = store.snapshot.with_nodes(nodes, synced=True)


def publish_devices(store: StateStore, devices: Mapping[str, DeviceFacts]) -> None:
    store.snapshot = store.snapshot.with_devices(devices, synced=True)


class ClusterReflectors(NamedTuple):
    nodes: Reflector[NodeFacts]
    devices: Reflector[DeviceFacts]
    reports: Reflector[ReportFacts]
    sightings: SightingIndex
    leases: Reflector[LeaseFacts] | None  # None: no gateway namespace to watch
    pods: Reflector[PodUse] | None = None  # None: no room check (no admission served)

    @property
    def watches(self) -> tuple[Reflector[Any], ...]:
        """Every reflector to run."""
        found = (self.nodes, self.devices, self.reports, self.leases, self.pods)
        return tuple(r for r in found if r is not None)


def cluster_reflectors(
    core: Any,  # kubernetes.aio CoreV1Api
    custom: Any,  # kubernetes.aio CustomObjectsApi
    store: StateStore,
    on_devices: Callable[[], None] | None = None,
    observe_devices: Callable[[str, DeviceFacts | None, DeviceFacts | None], None] | None = None,
    coordination: Any = None,  # kubernetes.aio CoordinationV1Api: the gateways' Leases
    gateway_namespace: str | None = None,
    pod_usage: bool = False,
) -> ClusterReflectors:
    """Reflectors feeding `store`'s Snapshot with Nodes, and Devices with the sightings
    of the gateways' reports merged in (`SightingIndex`).

    `on_devices` runs after each Devices publish, so whoever it wakes reads the
    new snapshot; `observe_devices` sees each (merged) Device change as it arrives.
    The Devices count as synced once Devices, reports and (when watched) the gateways'
    Leases in `gateway_namespace` have listed.

    With `pod_usage`, a pod watch (unfinished pods, as kube-scheduler's own) keeps
    the snapshot's per-node `usage` for admission's room check (resources.py).
    """
    index = SightingIndex(observe=observe_devices)
    holder: list[Reflector[Any]] = []

    def devices_published(_: object = None) -> None:
        synced = all(r.synced for r in holder[1:])
        store.snapshot = store.snapshot.with_devices(dict(index.merged), synced=synced)
        if on_devices is not None:
            on_devices()

    def nodes_published(facts: dict[str, NodeFacts]) -> None:
        publish_nodes(store, facts)
        if index.set_nodes(facts):  # a node gained or lost the gateway label
            devices_published()

    nodes: Reflector[NodeFacts] = Reflector(
        "nodes",
        core.list_node_without_preload_content,
        node_facts,
        nodes_published,
        skip_unchanged=True,
    )
    devices: Reflector[DeviceFacts] = Reflector(
        "devices",
        lambda **kw: custom.list_cluster_custom_object_without_preload_content(
            GROUP, VERSION, PLURAL, **kw
        ),
        # called with observed_at: a lastSeen ahead of us is capped at our first read of it
        functools.partial(device_facts, ahead=FirstRead()),
        devices_published,
        observe=index.observe_device,
    )
    reports: Reflector[ReportFacts] = Reflector(
        "gatewayreports",
        lambda **kw: custom.list_cluster_custom_object_without_preload_content(
            GROUP, VERSION, REPORT_PLURAL, **kw
        ),
        functools.partial(report_facts, ahead=FirstRead()),
        devices_published,
        observe=index.observe_report,
    )
    leases: Reflector[LeaseFacts] | None = None
    if coordination is not None and gateway_namespace:
        leases = Reflector(
            "gateway-leases",
            lambda **kw: coordination.list_namespaced_lease_without_preload_content(
                gateway_namespace, **kw
            ),
            lease_facts,
            devices_published,
            observe=index.observe_lease,
            on_list=index.relisted,
        )
    holder += [nodes, devices, reports]
    if leases is not None:
        holder.append(leases)
    pods: Reflector[PodUse] | None = None
    if pod_usage:
        usage = UsageIndex()

        def usage_published(_: object) -> None:
            store.snapshot = store.snapshot.with_usage(dict(usage.by_node), synced=True)

        pods = Reflector(
            "pods",
            lambda **kw: core.list_pod_for_all_namespaces_without_preload_content(
                field_selector=UNFINISHED_PODS, **kw
            ),
            pod_use,
            usage_published,
            key=namespaced_name,
            observe=usage.observe,
        )
    return ClusterReflectors(nodes, devices, reports, index, leases, pods)


# What kube-scheduler's pod informer lists: finished pods hold no room.
UNFINISHED_PODS = "status.phase!=Succeeded,status.phase!=Failed"


async def report_health(store: StateStore, reflectors: Sequence[Reflector[Any]]) -> None:
    """Keep the `kubernetes` source health current from the reflectors, every second."""
    while True:
        health = store.health("kubernetes")
        errors = [f"{r.name}: {r.last_error}" for r in reflectors if r.last_error]
        health.ok = not errors and all(r.synced for r in reflectors)
        health.detail = "; ".join(errors) or ("synced" if health.ok else "syncing")
        if health.ok:
            health.last_success = time.time()
        await asyncio.sleep(1.0)
