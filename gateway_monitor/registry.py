"""Which devices this gateway may track: the Device objects, kept current by a watch.

Only adverts that map to a Device (by address, or through its IRK for rotating
addresses) go further; everything else is dropped before it is tracked or logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cloud4iot.devices import PLURAL, RSSI_MIN
from gateway_monitor.irk import Resolver, parse_irk
from gateway_monitor.listwatch import list_watch

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A Device object reduced to what the monitor reads."""

    name: str
    address: str  # upper case
    irk: bytes | None = None
    enter: float | None = None
    leave: float | None = None
    own_rssi: int | None = None  # our node's entry in status.sightings, if any


def parse_device(obj: Mapping[str, Any], node: str | None = None) -> DeviceSpec | None:
    """Build a DeviceSpec; None (and a log line) for objects we cannot use."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    name = meta.get("name")
    address = spec.get("address")
    if not isinstance(name, str) or not isinstance(address, str):
        log.warning("ignoring Device without metadata.name or spec.address")
        return None
    irk: bytes | None = None
    if isinstance(spec.get("identityKey"), str):
        try:
            irk = parse_irk(spec["identityKey"])
        except ValueError:
            log.warning("Device %s: identityKey is not 32 hex digits; using its address", name)
    rssi = spec.get("rssi") or {}
    own: int | None = None
    if node is not None:
        for entry in (obj.get("status") or {}).get("sightings") or []:
            if isinstance(entry, Mapping) and entry.get("node") == node:
                own = int(entry.get("rssi", RSSI_MIN))
    return DeviceSpec(
        name=name,
        address=address.upper(),
        irk=irk,
        enter=_num(rssi.get("enter")),
        leave=_num(rssi.get("leave")),
        own_rssi=own,
    )


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


class RegistryListener(Protocol):
    def devices_changed(self, upserted: Iterable[DeviceSpec], removed: Iterable[str]) -> None:
        """Called after the registry changed (thresholds, deletions)."""
        ...


class Registry:
    """Address/IRK -> Device name, rebuilt on every change (devices are few per site)."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceSpec] = {}
        self._by_address: dict[str, str] = {}
        self._resolver = Resolver()
        self.synced = False  # a full list has been applied at least once
        self.listeners: list[RegistryListener] = []

    def lookup(self, address: str) -> str | None:
        """The Device name for an address on air, or None: never track strangers."""
        name = self._by_address.get(address)
        return name if name is not None else self._resolver.resolve(address)

    def replace_all(self, specs: Iterable[DeviceSpec]) -> None:
        new = {s.name: s for s in specs}
        removed = [n for n in self.devices if n not in new]
        self.devices = new
        self.synced = True
        self._rebuild()
        self._notify(new.values(), removed)

    def upsert(self, spec: DeviceSpec) -> None:
        old = self.devices.get(spec.name)
        self.devices[spec.name] = spec
        # Most MODIFIED events are other gateways' status applies: keep the RPA cache then.
        if old is None or (old.address, old.irk) != (spec.address, spec.irk):
            self._rebuild()
        if old is None or (old.enter, old.leave) != (spec.enter, spec.leave):
            self._notify([spec], [])

    def remove(self, name: str) -> None:
        if self.devices.pop(name, None) is not None:
            self._rebuild()
            self._notify([], [name])

    def _rebuild(self) -> None:
        self._by_address = {s.address: s.name for s in self.devices.values()}
        self._resolver = Resolver((s.name, s.irk) for s in self.devices.values() if s.irk)

    def _notify(self, upserted: Iterable[DeviceSpec], removed: Iterable[str]) -> None:
        up, rm = list(upserted), list(removed)
        for listener in self.listeners:
            listener.devices_changed(up, rm)


async def watch_devices(
    api: Any,
    registry: Registry,
    node: str,
    *,
    backoff: Callable[[int], float],
    on_error: Callable[[], None] = lambda: None,
    watch_timeout: int = 300,
) -> None:
    """List then watch Devices forever (gateway_monitor.listwatch): fresh list on 410
    Gone, backoff on other errors. ``api`` is the monitor's ``KubeApi``.
    """

    def listed(items: Sequence[Mapping[str, Any]]) -> None:
        specs = [parse_device(o, node) for o in items]
        registry.replace_all(s for s in specs if s is not None)

    def changed(kind: str, obj: Mapping[str, Any]) -> None:
        if kind == "DELETED":
            registry.remove((obj.get("metadata") or {}).get("name", ""))
            return
        spec = parse_device(obj, node)
        if spec is not None:
            registry.upsert(spec)

    await list_watch(
        api,
        PLURAL,
        what="Device",
        on_list=listed,
        on_event=changed,
        backoff=backoff,
        on_error=on_error,
        watch_timeout=watch_timeout,
    )
