# D-Bus signatures are written as return/argument annotations, as dbus-fast reads them.
# ruff: noqa: F722, F821, N802
"""A BLE heart-rate strap behind the fake ``org.bluez``: GATT, connections, notifications.

Builds on the gateway monitor's fake BlueZ (its private dbus-daemon, ``Adapter1`` and
``Device1``) and adds what a GATT client needs, as BlueZ presents it:

- ``Device1.Connect``/``Disconnect`` and the ``Connected``/``ServicesResolved`` properties;
  on connect the Heart Rate service (0x180D) and its Heart Rate Measurement
  characteristic (0x2A37, ``notify``) are exported (``InterfacesAdded``) before
  ``ServicesResolved`` turns true; on disconnect they are removed again;
- ``GattCharacteristic1.StartNotify``/``StopNotify`` (counted) and ``Notifying``;
  a notification is a ``PropertiesChanged`` of ``Value``, sent only while notifying;
- while in range and not connected, the strap advertises (an RSSI ``PropertiesChanged``
  every 50 ms while discovery is on), as straps do, so bleak's scan finds it; out of
  range it neither advertises nor accepts a connection, and a live link drops.
"""

import asyncio
import contextlib
from typing import Any

from dbus_fast import DBusError
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_property, method

from tests.gateway_monitor.fake_bluez import Device1, FakeBlueZ

HRS = "0000180d-0000-1000-8000-00805f9b34fb"
HRM = "00002a37-0000-1000-8000-00805f9b34fb"


class GattDevice1(Device1):
    """``Device1`` with a link: Connect/Disconnect driven by the strap."""

    def __init__(self, strap: "FakeStrap", adapter_path: str, address: str) -> None:
        super().__init__(adapter_path, address, -60, "HR strap", {}, [HRS])
        self._strap = strap
        self._connected = False
        self._resolved = False
        self.connect_calls = 0
        self.disconnect_calls = 0

    @dbus_property(access=PropertyAccess.READ)
    def Connected(self) -> "b":
        return self._connected

    @dbus_property(access=PropertyAccess.READ)
    def ServicesResolved(self) -> "b":
        return self._resolved

    @method()
    def Connect(self) -> None:
        self.connect_calls += 1
        if not self._strap.in_range:
            raise DBusError("org.bluez.Error.Failed", "Page Timeout")
        if self._strap.refuse_connections > 0:
            self._strap.refuse_connections -= 1
            raise DBusError("org.bluez.Error.Failed", "le-connection-abort-by-remote")
        self._strap.link_up()

    @method()
    def Disconnect(self) -> None:
        self.disconnect_calls += 1
        self._strap.link_down()

    def set_link(self, connected: bool, resolved: bool) -> None:
        changed: dict[str, Any] = {}
        if connected != self._connected:
            self._connected = changed["Connected"] = connected
        if resolved != self._resolved:
            self._resolved = changed["ServicesResolved"] = resolved
        if changed:
            self.emit_properties_changed(changed)


class GattService1(ServiceInterface):
    def __init__(self, device_path: str) -> None:
        super().__init__("org.bluez.GattService1")
        self._device = device_path

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return HRS

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> "b":
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Device(self) -> "o":
        return self._device


class GattCharacteristic1(ServiceInterface):
    def __init__(self, service_path: str) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self._service = service_path
        self._value = b""
        self._notifying = False
        self.start_notify_calls = 0
        self.stop_notify_calls = 0
        self.hang_start_notify = False  # StartNotify never answers (a stuck BlueZ call)

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return HRM

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> "o":
        return self._service

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":
        return ["notify"]

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> "ay":
        return self._value

    @dbus_property(access=PropertyAccess.READ)
    def Notifying(self) -> "b":
        return self._notifying

    @method()
    async def StartNotify(self) -> None:
        self.start_notify_calls += 1
        if self.hang_start_notify:
            await asyncio.Event().wait()
        self._set_notifying(True)

    @method()
    def StopNotify(self) -> None:
        self.stop_notify_calls += 1
        if not self._notifying:
            raise DBusError("org.bluez.Error.Failed", "No notify session started")
        self._set_notifying(False)

    def _set_notifying(self, value: bool) -> None:
        if value != self._notifying:
            self._notifying = value
            self.emit_properties_changed({"Notifying": value})

    @property
    def notifying(self) -> bool:
        return self._notifying

    def notify(self, value: bytes) -> bool:
        if not self._notifying:
            return False
        self._value = value
        self.emit_properties_changed({"Value": value})
        return True


class FakeStrap:
    """One strap; ``start()`` exports it and starts advertising."""

    def __init__(self, bluez: FakeBlueZ, address: str) -> None:
        self.bluez = bluez
        self.address = address
        self.path = f"{bluez.adapter_path}/dev_{address.replace(':', '_')}"
        self.service_path = f"{self.path}/service000c"
        self.char_path = f"{self.service_path}/char000d"
        self.device = GattDevice1(self, bluez.adapter_path, address)
        self.service = GattService1(self.path)
        self.characteristic = GattCharacteristic1(self.service_path)
        self.in_range = True
        self.refuse_connections = 0  # the next n Connect calls fail
        self.hang_start_notify = 0  # the next n links' StartNotify never answers
        self.links = 0  # times the link came up
        self.sessions: list[GattCharacteristic1] = []  # one characteristic object per link
        self._advertiser: asyncio.Task[None] | None = None
        self._rssi = -60

    @property
    def _bus(self) -> Any:
        bus = self.bluez._bus
        assert bus is not None, "the fake BlueZ is not running"
        return bus

    async def start(self) -> None:
        self._bus.export(self.path, self.device)
        self._advertiser = asyncio.create_task(self._advertise())

    async def stop(self) -> None:
        if self._advertiser is not None:
            self._advertiser.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._advertiser

    async def _advertise(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            if self.in_range and not self.connected and self.bluez.listening:
                self._rssi = -61 if self._rssi == -60 else -60
                self.device.set_rssi(self._rssi)

    @property
    def connected(self) -> bool:
        return self.device._connected

    def link_up(self) -> None:
        if self.connected:
            return
        self.links += 1
        self.characteristic = GattCharacteristic1(self.service_path)  # fresh GATT cache
        if self.hang_start_notify > 0:
            self.hang_start_notify -= 1
            self.characteristic.hang_start_notify = True
        self.sessions.append(self.characteristic)
        self.device.set_link(True, False)
        self._bus.export(self.service_path, self.service)
        self._bus.export(self.char_path, self.characteristic)
        self.device.set_link(True, True)

    def link_down(self) -> None:
        if not self.connected:
            return
        self.characteristic._set_notifying(False)  # BlueZ ends notify sessions on a dead link
        self.device.set_link(False, False)
        self._bus.unexport(self.char_path)
        self._bus.unexport(self.service_path)

    def drop(self) -> None:
        """The strap ends the link itself (rebooted, battery swap) but stays in range."""
        self.link_down()

    def leave(self) -> None:
        """Out of range: the link drops (supervision timeout) and the strap is not heard."""
        self.in_range = False
        self.link_down()

    def come_back(self) -> None:
        self.in_range = True

    def notify(self, value: bytes) -> bool:
        """One Heart Rate Measurement notification; False if nobody subscribed."""
        return self.connected and self.characteristic.notify(value)
