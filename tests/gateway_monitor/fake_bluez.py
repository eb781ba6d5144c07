# D-Bus signatures are written as return/argument annotations, as dbus-fast reads them.
# ruff: noqa: F722, F821, N802
"""A fake ``org.bluez`` on a private dbus-daemon, good enough to drive unmodified bleak.

``PrivateBus`` starts ``dbus-daemon`` with our own config on a unix socket in a temp
dir; ``FakeBlueZ`` connects to it with dbus-fast and exports an ObjectManager (dbus-fast
answers GetManagedObjects and emits InterfacesAdded on export), one ``Adapter1`` and a
``Device1`` per advertiser. A first advert exports the device (bleak sees
InterfacesAdded); later adverts change ``RSSI`` through PropertiesChanged. Adverts sent
while discovery is off are dropped, as a radio that is not scanning hears nothing.
"""

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from dbus_fast import BusType, DBusError, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_property, method

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


class PrivateBus:
    """A dbus-daemon of our own; ``stop()`` kills it and removes its directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fake-bluez-"))
        self.address = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> str:
        daemon = shutil.which("dbus-daemon")
        if daemon is None:
            raise RuntimeError("dbus-daemon is missing: run `bash scripts/system-deps.sh`")
        config = self.dir / "bus.conf"
        config.write_text(_CONFIG.format(socket=self.dir / "bus.sock"), encoding="utf-8")
        self._proc = subprocess.Popen(
            [daemon, f"--config-file={config}", "--nofork", "--nopidfile", "--print-address"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # it warns about fd limits it may not raise here
            text=True,
        )
        assert self._proc.stdout is not None
        self.address = self._proc.stdout.readline().strip()
        if not self.address:
            self.stop()
            raise RuntimeError("dbus-daemon did not print its address")
        return self.address

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid


class Adapter1(ServiceInterface):
    def __init__(self, address: str) -> None:
        super().__init__("org.bluez.Adapter1")
        self._address = address
        self._powered = True
        self._discovering = False
        self.discovery_filters: list[dict[str, Any]] = []
        self.start_calls = 0
        self.stop_calls = 0

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> "s":
        return self._address

    @dbus_property(access=PropertyAccess.READ)
    def Powered(self) -> "b":
        return self._powered

    @dbus_property(access=PropertyAccess.READ)
    def Discovering(self) -> "b":
        return self._discovering

    @dbus_property(access=PropertyAccess.READ)
    def Roles(self) -> "as":
        return ["central", "peripheral"]

    @method()
    def SetDiscoveryFilter(self, filters: "a{sv}") -> None:
        self.discovery_filters.append(filters)

    @method()
    def StartDiscovery(self) -> None:
        if not self._powered:
            raise DBusError("org.bluez.Error.NotReady", "Resource Not Ready")
        self.start_calls += 1
        self._set_discovering(True)

    @method()
    def StopDiscovery(self) -> None:
        self.stop_calls += 1
        self._set_discovering(False)

    def _set_discovering(self, value: bool) -> None:
        if value != self._discovering:
            self._discovering = value
            self.emit_properties_changed({"Discovering": value})

    def set_powered(self, value: bool) -> None:
        self._powered = value
        self.emit_properties_changed({"Powered": value})
        if not value:
            self._set_discovering(False)

    @property
    def discovering(self) -> bool:
        return self._discovering


class AdvertisementMonitorManager1(ServiceInterface):
    """BlueZ >= 5.56 with --experimental: what passive scanning needs."""

    def __init__(self) -> None:
        super().__init__("org.bluez.AdvertisementMonitorManager1")
        self.monitors: list[str] = []

    @dbus_property(access=PropertyAccess.READ)
    def SupportedMonitorTypes(self) -> "as":
        return ["or_patterns"]

    @dbus_property(access=PropertyAccess.READ)
    def SupportedFeatures(self) -> "as":
        return []

    @method()
    def RegisterMonitor(self, application: "o") -> None:
        self.monitors.append(application)

    @method()
    def UnregisterMonitor(self, application: "o") -> None:
        if application in self.monitors:
            self.monitors.remove(application)


class Device1(ServiceInterface):
    def __init__(
        self,
        adapter_path: str,
        address: str,
        rssi: int,
        alias: str,
        manufacturer_data: dict[int, bytes],
        uuids: list[str],
    ) -> None:
        super().__init__("org.bluez.Device1")
        self._adapter = adapter_path
        self._address = address
        self._alias = alias
        self._rssi = rssi
        self._mfr = manufacturer_data
        self._uuids = uuids

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> "s":
        return self._address

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> "s":
        return "random" if int(self._address[:2], 16) >> 6 != 0b00 else "public"

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> "s":
        return self._alias

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> "s":
        return self._alias

    @dbus_property(access=PropertyAccess.READ)
    def Adapter(self) -> "o":
        return self._adapter

    @dbus_property(access=PropertyAccess.READ)
    def RSSI(self) -> "n":
        return self._rssi

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> "as":
        return self._uuids

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(self) -> "a{qv}":
        return {k: Variant("ay", v) for k, v in self._mfr.items()}

    @dbus_property(access=PropertyAccess.READ)
    def ServiceData(self) -> "a{sv}":
        return {}

    @dbus_property(access=PropertyAccess.READ)
    def Connected(self) -> "b":
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Paired(self) -> "b":
        return False

    def set_rssi(self, rssi: int) -> None:
        self._rssi = rssi
        self.emit_properties_changed({"RSSI": rssi})


class FakeBlueZ:
    """Owns ``org.bluez`` on the private bus and plays advertisers."""

    ADAPTER = "hci0"

    def __init__(self, bus_address: str, *, passive: bool = False) -> None:
        self.bus_address = bus_address
        self.adapter_path = f"/org/bluez/{self.ADAPTER}"
        self.adapter = Adapter1("00:1A:7D:DA:71:13")
        # Without it (the default) bleak's passive mode fails, as on most BlueZ installs.
        self.monitor_manager = AdvertisementMonitorManager1() if passive else None
        self.devices: dict[str, Device1] = {}
        self.dropped = 0  # adverts sent while not discovering
        self._bus: MessageBus | None = None

    async def start(self) -> None:
        bus = await MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM).connect()
        bus.export(self.adapter_path, self.adapter)
        if self.monitor_manager is not None:
            bus.export(self.adapter_path, self.monitor_manager)
        await bus.request_name("org.bluez")
        self._bus = bus

    async def restart(self) -> None:
        """Like bluetoothd restarting: the name gets a new owner that forgot everything."""
        self.stop()
        await asyncio.sleep(0.1)
        self.adapter = Adapter1("00:1A:7D:DA:71:13")
        if self.monitor_manager is not None:
            self.monitor_manager = AdvertisementMonitorManager1()
        self.devices = {}
        await self.start()

    @property
    def listening(self) -> bool:
        """Active discovery, or a registered advertisement monitor (passive scanning)."""
        monitors = self.monitor_manager.monitors if self.monitor_manager else []
        return self.adapter.discovering or bool(monitors)

    def stop(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None

    def advertise(
        self,
        address: str,
        rssi: int,
        *,
        name: str = "wearable",
        manufacturer_data: dict[int, bytes] | None = None,
        uuids: list[str] | None = None,
    ) -> bool:
        """One advertisement as BlueZ reports it; False if nobody is scanning."""
        if self._bus is None or not self.listening:
            self.dropped += 1
            return False
        device = self.devices.get(address)
        if device is None:
            device = Device1(
                self.adapter_path, address, rssi, name, manufacturer_data or {}, uuids or []
            )
            self.devices[address] = device
            self._bus.export(f"{self.adapter_path}/dev_{address.replace(':', '_')}", device)
        else:
            device.set_rssi(rssi)
        return True


@contextlib.asynccontextmanager
async def running_fake_bluez() -> Any:
    """Private bus + fake BlueZ; yields (bus, fake); kills the daemon on the way out."""
    bus = PrivateBus()
    bus.start()
    fake = FakeBlueZ(bus.address)
    try:
        await fake.start()
        yield bus, fake
    finally:
        fake.stop()
        bus.stop()
