"""Advertisement sources: bleak over BlueZ, and the replay of recorded traces.

Both hand the same ``Advert`` to the same sink, so everything after the scanner (RPA
resolution, tracking, publishing) runs identically live and on replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from gateway_monitor.backoff import backoff_delays
from gateway_monitor.traces import TraceRecord

log = logging.getLogger(__name__)

# A wedged bluetoothd must not hang the monitor: every D-Bus round trip gets this long.
DBUS_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Advert:
    """One received advertisement, reduced to what the monitor reads."""

    address: str  # upper-case AA:BB:CC:DD:EE:FF
    rssi: int
    t: float  # the source's clock (seconds), see AdvertSource.clock
    name: str | None = None
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_uuids: tuple[str, ...] = ()
    address_type: str | None = None  # "public" | "random" when the stack says (BlueZ does)


AdvertSink = Callable[[Advert], None]


class ScanMode(StrEnum):
    AUTO = "auto"  # passive where BlueZ allows it (advertisement monitor), else active
    PASSIVE = "passive"
    ACTIVE = "active"


@dataclass(frozen=True, slots=True)
class DutyCycle:
    """Scan ``on`` seconds out of every ``period``; ``on >= period`` means always on."""

    on: float = 1.0
    period: float = 1.0

    def __post_init__(self) -> None:
        if self.on <= 0 or self.period <= 0:
            raise ValueError("duty cycle on-time and period must be positive")

    @property
    def always_on(self) -> bool:
        return self.on >= self.period

    @property
    def off(self) -> float:
        return max(0.0, self.period - self.on)

    @property
    def fraction(self) -> float:
        return min(1.0, self.on / self.period)

    def scanning(self, t: float) -> bool:
        """Is the radio listening at time ``t`` (cycles start at t = 0)?"""
        return self.always_on or math.fmod(t, self.period) < self.on

    @classmethod
    def parse(cls, text: str) -> DutyCycle:
        """``"1"`` / ``"always"`` = always on; ``"ON/PERIOD"`` in seconds, e.g. ``"2/10"``."""
        if text.strip().lower() in ("1", "always", "on"):
            return cls()
        on, sep, period = text.partition("/")
        if not sep:
            raise ValueError(f"duty cycle {text!r}: use ON/PERIOD seconds, e.g. 2/10")
        return cls(on=float(on), period=float(period))


@dataclass(slots=True)
class SourceHealth:
    """What /healthz reports about the radio side."""

    healthy: bool = False
    reason: str = "starting"
    mode: str = ""
    failures: int = 0  # consecutive; reset on a good start
    total_failures: int = 0  # since start, for the errors metric

    def ok(self, mode: str) -> None:
        self.healthy, self.reason, self.mode, self.failures = True, "scanning", mode, 0

    def fail(self, reason: str) -> None:
        self.healthy, self.reason = False, reason
        self.failures += 1
        self.total_failures += 1


class AdvertSource(Protocol):
    health: SourceHealth

    def clock(self) -> float:
        """Seconds on the timeline that ``Advert.t`` uses."""
        ...

    async def run(self, sink: AdvertSink) -> None:
        """Deliver adverts until cancelled (or, for a replay, until the trace ends)."""
        ...


def _address_type(device: Any) -> str | None:
    """BlueZ's Device1.AddressType, as bleak passes it in the device's details."""
    details = getattr(device, "details", None)
    props = details.get("props") if isinstance(details, dict) else None
    kind = props.get("AddressType") if isinstance(props, dict) else None
    return kind if kind in ("public", "random") else None


# --- replay ------------------------------------------------------------------------------


class ReplaySource:
    """Feeds a trace through the sink in (scaled) real time; the clock is trace seconds."""

    def __init__(
        self,
        records: Sequence[TraceRecord],
        *,
        speed: float = 1.0,
        duty: DutyCycle | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.records = records
        self.speed = speed
        self.duty = duty or DutyCycle()
        self.health = SourceHealth()
        self._started: float | None = None
        self.finished = asyncio.Event()

    def clock(self) -> float:
        if self._started is None:
            return 0.0
        return (asyncio.get_running_loop().time() - self._started) * self.speed

    @staticmethod
    def to_advert(rec: TraceRecord) -> Advert:
        return Advert(
            address=rec.address,
            rssi=rec.rssi,
            t=rec.t,
            name=rec.name,
            manufacturer_data=rec.manufacturer_data,
            service_uuids=rec.service_uuids,
        )

    def feed(self, sink: AdvertSink) -> int:
        """Deliver the whole trace at once (no sleeping); returns adverts delivered."""
        n = 0
        for rec in self.records:
            if self.duty.scanning(rec.t):
                sink(self.to_advert(rec))
                n += 1
        return n

    async def run(self, sink: AdvertSink) -> None:
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        self.health.ok("replay")
        for rec in self.records:
            delay = self._started + rec.t / self.speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            # The radio is deaf while the duty cycle has it off.
            if self.duty.scanning(rec.t):
                sink(self.to_advert(rec))
        self.finished.set()


# --- bleak / BlueZ -----------------------------------------------------------------------


class AdapterGoneError(Exception):
    """The watchdog found BlueZ restarted, the adapter missing or powered off."""


class BlueZProbe:
    """Watches ``org.bluez`` on the system bus, independently of bleak's cached state.

    bleak notices a dead D-Bus connection but not a restarted bluetoothd (a new owner of
    ``org.bluez`` has forgotten our discovery session), so this asks the bus directly.
    """

    def __init__(self, adapter: str) -> None:
        self.adapter_path = f"/org/bluez/{adapter}"
        self._bus: Any = None
        self._owner: str | None = None

    async def _call(self, **kw: Any) -> Any:
        from dbus_fast import Message, MessageType

        reply = await self._bus.call(Message(**kw))
        if reply.message_type == MessageType.ERROR:
            raise AdapterGoneError(f"{kw.get('member')}: {reply.error_name}")
        return reply.body

    async def start(self) -> None:
        from dbus_fast import BusType
        from dbus_fast.aio import MessageBus

        self._bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        self._owner = await self._bluez_owner()
        await self.check()

    async def _bluez_owner(self) -> str:
        body = await self._call(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="GetNameOwner",
            signature="s",
            body=["org.bluez"],
        )
        return str(body[0])

    async def check(self) -> None:
        """Raise AdapterGoneError unless the same bluetoothd still has the adapter powered."""
        if self._bus is None or not self._bus.connected:
            raise AdapterGoneError("lost the system bus")
        owner = await self._bluez_owner()
        if owner != self._owner:
            raise AdapterGoneError("BlueZ restarted")
        body = await self._call(
            destination="org.bluez",
            path=self.adapter_path,
            interface="org.freedesktop.DBus.Properties",
            member="Get",
            signature="ss",
            body=["org.bluez.Adapter1", "Powered"],
        )
        if not body[0].value:
            raise AdapterGoneError("adapter powered off")

    def close(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None


# Passive scanning matches advertisement content; every connectable or discoverable
# advertiser sends the Flags AD with one of these values (LE general/limited
# discoverable, BR/EDR not supported). Non-connectable beacons without Flags need active.
_FLAG_VALUES = (b"\x02", b"\x06", b"\x1a", b"\x05", b"\x04", b"\x18")


def _or_patterns() -> list[Any]:
    from bleak.args.bluez import OrPattern
    from bleak.assigned_numbers import AdvertisementDataType

    return [OrPattern(0, AdvertisementDataType.FLAGS, v) for v in _FLAG_VALUES]


class BleakSource:
    """Scans with bleak's BleakScanner; retries with backoff and reports health."""

    def __init__(
        self,
        *,
        adapter: str = "hci0",
        mode: ScanMode = ScanMode.AUTO,
        duty: DutyCycle | None = None,
        probe_interval: float = 5.0,
        backoff: Callable[[int], float] | None = None,
    ) -> None:
        self.adapter = adapter
        self.mode = mode
        self.duty = duty or DutyCycle()
        self.probe_interval = probe_interval
        self.backoff = backoff or backoff_delays()
        self.health = SourceHealth()
        self._passive_unavailable = mode is ScanMode.ACTIVE

    def clock(self) -> float:
        return asyncio.get_running_loop().time()

    def _scanner(self, sink: AdvertSink, passive: bool) -> Any:
        from bleak import BleakScanner
        from bleak.args.bluez import BlueZScannerArgs

        clock = self.clock

        def on_advert(device: Any, adv: Any) -> None:
            sink(
                Advert(
                    address=str(device.address).upper(),
                    rssi=int(adv.rssi),
                    t=clock(),
                    name=adv.local_name,
                    manufacturer_data=dict(adv.manufacturer_data),
                    service_uuids=tuple(adv.service_uuids),
                    address_type=_address_type(device),
                )
            )

        bluez: BlueZScannerArgs = {"adapter": self.adapter}
        if passive:
            bluez["or_patterns"] = _or_patterns()
        return BleakScanner(
            on_advert, scanning_mode="passive" if passive else "active", bluez=bluez
        )

    async def _start(self, sink: AdvertSink) -> tuple[Any, str]:
        from bleak.exc import BleakError

        if not self._passive_unavailable:
            scanner = self._scanner(sink, passive=True)
            try:
                async with asyncio.timeout(DBUS_TIMEOUT):
                    await scanner.start()
                return scanner, "passive"
            except BleakError as exc:
                if self.mode is ScanMode.PASSIVE:
                    raise
                # Needs BlueZ >= 5.56 with --experimental; remember and stop trying.
                log.warning("passive scanning unavailable (%s); scanning actively", exc)
                self._passive_unavailable = True
        scanner = self._scanner(sink, passive=False)
        async with asyncio.timeout(DBUS_TIMEOUT):
            await scanner.start()
        return scanner, "active"

    async def run(self, sink: AdvertSink) -> None:
        while True:
            probe = BlueZProbe(self.adapter)
            scanner: Any = None
            try:
                async with asyncio.timeout(DBUS_TIMEOUT):
                    await probe.start()
                scanner, mode = await self._start(sink)
                self.health.ok(mode)
                log.info(
                    "scanning on %s (%s, duty %.0f%%)", self.adapter, mode, 100 * self.duty.fraction
                )
                await self._supervise(scanner, probe, sink)
            except Exception as exc:  # any adapter/BlueZ/D-Bus failure: back off and retry
                self.health.fail(f"{type(exc).__name__}: {exc}")
            finally:  # also on cancellation: never leave a discovery session behind
                await self._stop(scanner)
                probe.close()
            delay = self.backoff(self.health.failures)
            log.warning("scanner failed (%s); retrying in %.1fs", self.health.reason, delay)
            await asyncio.sleep(delay)

    async def _supervise(self, scanner: Any, probe: BlueZProbe, sink: AdvertSink) -> None:
        """Probe BlueZ while scanning; with a duty cycle, stop and restart the scan."""
        loop = asyncio.get_running_loop()
        scanning_since = loop.time()
        while True:
            if self.duty.always_on:
                await asyncio.sleep(self.probe_interval)
                async with asyncio.timeout(DBUS_TIMEOUT):
                    await probe.check()
                continue
            remaining = self.duty.on - (loop.time() - scanning_since)
            if remaining > 0:
                await asyncio.sleep(min(remaining, self.probe_interval))
                async with asyncio.timeout(DBUS_TIMEOUT):
                    await probe.check()
                continue
            async with asyncio.timeout(DBUS_TIMEOUT):
                await scanner.stop()
            await asyncio.sleep(self.duty.off)
            async with asyncio.timeout(DBUS_TIMEOUT):
                await probe.check()
            async with asyncio.timeout(DBUS_TIMEOUT):
                await scanner.start()
            scanning_since = loop.time()

    @staticmethod
    async def _stop(scanner: Any) -> None:
        if scanner is None:
            return
        # Stopping a scan on a BlueZ that went away fails; there is nothing to undo then.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(DBUS_TIMEOUT):
                await scanner.stop()
