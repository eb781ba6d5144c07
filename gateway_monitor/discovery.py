"""Discovery on the gateway: adverts of unregistered devices matched against DeviceClasses
and reported as candidates in this gateway's own GatewayReport (issue 25).

The monitor may not create Devices; it only says "I hear an unregistered device that
matches class X at this RSSI" in `status.candidates` of its report, which the admission
policy already restricts to this node. The elected extender decides (the class's cap and
admission mode). A stranger matching no class stays dropped: never tracked, logged or
published. The candidate list is bounded (MAX_CANDIDATES, the strongest kept), expires
entries unheard for a while, and is written at most once per `min_interval` under a
field manager of its own, so the sightings publisher's applies never remove it and
this writer never touches the sightings (docs/gateway-writes.md, section 4).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloud4iot.deviceclass import CLASS_PLURAL, DeviceClass, parse_class
from cloud4iot.devices import (
    API_VERSION,
    APPLY_PATCH,
    GROUP,
    REPORT_KIND,
    REPORT_PLURAL,
    VERSION,
    gateway_field_manager,
    rfc3339,
)
from gateway_monitor.listwatch import list_watch
from gateway_monitor.scanner import Advert
from gateway_monitor.tracker import clamp_rssi

log = logging.getLogger(__name__)

MAX_CANDIDATES = 64  # the CRD's maxItems for status.candidates


def candidates_field_manager(node: str) -> str:
    return gateway_field_manager(node) + "/candidates"


@dataclass(slots=True)
class ClassBook:
    """The DeviceClasses' filters, kept current by `watch_classes`."""

    classes: dict[str, DeviceClass] = field(default_factory=dict)

    def match(self, advert: Advert) -> str | None:
        """The first class (by name) whose filter and arrival RSSI the advert meets."""
        for name in sorted(self.classes):
            cls = self.classes[name]
            if advert.rssi >= cls.arrival_rssi and cls.filter.matches(
                address=advert.address,
                service_uuids=advert.service_uuids,
                manufacturer_data=advert.manufacturer_data,
                name=advert.name,
                address_type=advert.address_type,
            ):
                return name
        return None


@dataclass(slots=True)
class _Candidate:
    device_class: str
    rssi: int
    last_seen: float  # wall clock


@dataclass(slots=True)
class CandidateBook:
    """What the report's candidate list says: at most `limit`, the strongest kept. Pure."""

    limit: int = MAX_CANDIDATES
    ttl: float = 30.0  # a candidate unheard this long leaves the list
    entries: dict[str, _Candidate] = field(default_factory=dict)
    changed: bool = False  # the list's membership changed since the last write

    def observe(self, address: str, device_class: str, rssi: int, now: float) -> bool:
        """Record an advert; False when the list is full of stronger candidates."""
        # In the CRD's range, as sightings are: one advert outside it (HCI reports 127
        # for "not available") made the apiserver refuse the whole candidate list.
        rssi = clamp_rssi(rssi)
        have = self.entries.get(address)
        if have is not None:
            have.device_class, have.rssi, have.last_seen = device_class, rssi, now
            return True
        if len(self.entries) >= self.limit:
            weakest = min(self.entries, key=lambda a: (self.entries[a].rssi, a))
            if self.entries[weakest].rssi >= rssi:
                return False
            del self.entries[weakest]
        self.entries[address] = _Candidate(device_class, rssi, now)
        self.changed = True
        return True

    def expire(self, now: float) -> None:
        for address in [a for a, c in self.entries.items() if now - c.last_seen > self.ttl]:
            del self.entries[address]
            self.changed = True

    def body(self, node: str) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": REPORT_KIND,
            "metadata": {"name": node},
            "status": {
                "candidates": [
                    {
                        "address": address,
                        "deviceClass": c.device_class,
                        "rssi": c.rssi,
                        "lastSeen": rfc3339(c.last_seen),
                    }
                    for address, c in sorted(self.entries.items())
                ]
            },
        }


@dataclass(slots=True, eq=False)
class Discovery:
    """The monitor's hook for adverts no Device claims."""

    classes: ClassBook
    book: CandidateBook
    wall: Callable[[], float] = time.time

    def offer(self, advert: Advert) -> bool:
        """True when the advert matched a class (and so is a candidate, not dropped)."""
        name = self.classes.match(advert)
        if name is None:
            return False
        self.book.observe(advert.address, name, advert.rssi, self.wall())
        return True


@dataclass(slots=True, eq=False)
class CandidateWriter:
    """Applies the candidate list: on a membership change, and every `heartbeat` while it
    is not empty (the extender acts only on candidates heard within a minute); at most
    once per `min_interval`, whatever the radio hears."""

    api: Any  # gateway_monitor.kubeapi.KubeApi (or kubernetes.aio's CustomObjectsApi)
    node: str
    book: CandidateBook
    backoff: Callable[[int], float]
    min_interval: float = 2.0
    heartbeat: float = 10.0
    wall: Callable[[], float] = time.time
    writes: int = 0
    _last: float = -float("inf")
    _listed: bool = False  # the last write listed someone

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self.step()
                failures = 0
                await asyncio.sleep(self.min_interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning("candidate list of %s not written (%s)", self.node, _why(exc))
                await asyncio.sleep(max(self.min_interval, self.backoff(failures)))

    async def step(self) -> bool:
        now = self.wall()
        self.book.expire(now)
        due = self.book.changed or (
            (self.book.entries or self._listed) and now - self._last >= self.heartbeat
        )
        if not due:
            return False
        self.book.changed = False
        try:
            await self.api.patch_cluster_custom_object_status(
                GROUP,
                VERSION,
                REPORT_PLURAL,
                self.node,
                self.book.body(self.node),
                field_manager=candidates_field_manager(self.node),
                force=True,
                _content_type=APPLY_PATCH,
            )
        except BaseException:
            self.book.changed = True  # try again
            raise
        self.writes += 1
        self._last = now
        self._listed = bool(self.book.entries)
        return True


def _why(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status is not None else type(exc).__name__


async def watch_classes(
    api: Any,
    book: ClassBook,
    *,
    backoff: Callable[[int], float],
    on_error: Callable[[], None] = lambda: None,
    watch_timeout: int = 300,
) -> None:
    """List then watch DeviceClasses forever (gateway_monitor.listwatch, as Devices)."""

    def listed(items: Sequence[Mapping[str, Any]]) -> None:
        book.classes = dict(_parsed(items))

    def changed(kind: str, obj: Mapping[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        book.classes.pop(name, None)  # a class no longer valid stops matching
        if kind != "DELETED":
            book.classes.update(_parsed([obj]))

    await list_watch(
        api,
        CLASS_PLURAL,
        what="DeviceClass",
        on_list=listed,
        on_event=changed,
        backoff=backoff,
        on_error=on_error,
        watch_timeout=watch_timeout,
    )


def _parsed(objs: Iterable[Any]) -> Iterable[tuple[str, DeviceClass]]:
    for obj in objs:
        try:
            cls = parse_class(obj)
        except ValueError as exc:
            log.warning("ignoring DeviceClass: %s", exc)
            continue
        yield cls.name, cls
