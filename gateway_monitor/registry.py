"""Which devices this gateway may track: the Device objects, kept current by a watch.

Only adverts that map to a Device (by address, or through its IRK for rotating
addresses) go further; everything else is dropped before it is tracked or logged.

A Device's IRK comes from the Secret cloud4iot-identity-keys in the monitors' own
namespace (data keyed by Device name, watched as well): only the monitors and admins
may read it. The Device's own spec.identityKey (deprecated: anyone who may list Devices
reads it) is used only while the Secret holds no key for that Device, with a warning.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cloud4iot.devices import GATEWAY_NAMESPACE, IDENTITY_KEYS_SECRET, PLURAL, RSSI_MIN
from gateway_monitor.irk import Resolver, parse_irk
from gateway_monitor.listwatch import follow, list_watch, one_secret

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A Device object reduced to what the monitor reads."""

    name: str
    address: str  # upper case
    irk: bytes | None = None  # the deprecated spec.identityKey; the Secret's key wins
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


def parse_identity_keys(secret: Mapping[str, Any] | None) -> dict[str, bytes]:
    """Device name -> IRK from the identity-keys Secret's `data` (base64 of 32 hex
    digits); a value that is not one is left out, with a warning."""
    found: dict[str, bytes] = {}
    data = (secret or {}).get("data") or {}
    if not isinstance(data, Mapping):
        log.warning("Secret %s: data is not a mapping; no keys from it", IDENTITY_KEYS_SECRET)
        return found
    for name, value in data.items():
        try:
            found[str(name)] = parse_irk(base64.b64decode(str(value), validate=True).decode())
        except (ValueError, binascii.Error, UnicodeDecodeError):
            log.warning(
                "Secret %s: the key for Device %s is not 32 hex digits; ignored",
                IDENTITY_KEYS_SECRET,
                name,
            )
    return found


class Registry:
    """Address/IRK -> Device name, rebuilt on every change (devices are few per site)."""

    def __init__(self, namespace: str = GATEWAY_NAMESPACE) -> None:
        self.devices: dict[str, DeviceSpec] = {}
        self._by_address: dict[str, str] = {}
        self._resolver = Resolver()
        self.synced = False  # a full list has been applied at least once
        self.listeners: list[RegistryListener] = []
        self.namespace = namespace  # where the identity-keys Secret is (for warnings)
        self.keys: dict[str, bytes] = {}  # from the Secret: Device name -> IRK
        self.keys_synced = False  # the Secret has been read (or found absent) once
        self._legacy_warned: set[str] = set()

    def irk(self, name: str) -> bytes | None:
        """The key that resolves Device `name`'s addresses: the Secret's, else the
        Device's deprecated spec.identityKey."""
        key = self.keys.get(name)
        if key is not None:
            return key
        spec = self.devices.get(name)
        return spec.irk if spec is not None else None

    def set_keys(self, keys: Mapping[str, bytes]) -> None:
        """The identity-keys Secret's keys (all of them: a list, or an event)."""
        new = dict(keys)
        first, self.keys_synced = not self.keys_synced, True
        if new != self.keys or first:
            self.keys = new
            self._rebuild()

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
        keys = [(name, self.irk(name)) for name in self.devices]
        self._resolver = Resolver((name, key) for name, key in keys if key)
        if self.keys_synced:  # (before, the Secret may hold the key yet)
            for spec in self.devices.values():
                if spec.irk and spec.name not in self.keys:
                    self._warn_legacy(spec.name)

    def _warn_legacy(self, name: str) -> None:
        if name in self._legacy_warned:
            return
        self._legacy_warned.add(name)
        log.warning(
            "Device %s: its IRK is read from spec.identityKey, which anyone who may list "
            "Devices can read (deprecated); move it to the Secret %s in namespace %s: "
            "`cloud4iot devices approve %s --irk HEX` for a discovered Device, else "
            "`kubectl -n %s patch secret %s --type merge -p "
            '\'{"stringData":{"%s":"HEX"}}\'` (create the Secret if absent), '
            "then remove spec.identityKey from the Device",
            name,
            IDENTITY_KEYS_SECRET,
            self.namespace,
            name,
            self.namespace,
            IDENTITY_KEYS_SECRET,
            name,
        )

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


async def watch_identity_keys(
    api: Any,
    registry: Registry,
    namespace: str,
    *,
    backoff: Callable[[int], float],
    on_error: Callable[[], None] = lambda: None,
    watch_timeout: int = 300,
) -> None:
    """List then watch the identity-keys Secret in `namespace` forever, as the Devices
    are (gateway_monitor.listwatch); no Secret = no keys from it."""

    def listed(items: Sequence[Mapping[str, Any]]) -> None:
        registry.set_keys(parse_identity_keys(items[0] if items else None))

    def changed(kind: str, obj: Mapping[str, Any]) -> None:
        registry.set_keys({} if kind == "DELETED" else parse_identity_keys(obj))

    await follow(
        one_secret(api, namespace, IDENTITY_KEYS_SECRET),
        what=f"Secret {IDENTITY_KEYS_SECRET}",
        on_list=listed,
        on_event=changed,
        backoff=backoff,
        on_error=on_error,
        watch_timeout=watch_timeout,
    )
