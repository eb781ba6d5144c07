"""Unmodified bleak against a fake org.bluez: adverts and RSSI changes reach our tracker."""

from __future__ import annotations

import asyncio
import os

import pytest
from fake_bluez import FakeBlueZ

from gateway_monitor.metrics import Metrics
from gateway_monitor.monitor import Monitor
from gateway_monitor.publisher import Sighting
from gateway_monitor.registry import DeviceSpec, Registry
from gateway_monitor.scanner import Advert, BleakSource, DutyCycle, ScanMode
from gateway_monitor.tracker import Tracker
from tests.waiting import eventually

pytestmark = pytest.mark.dbus

WEARABLE = "C0:FF:EE:00:00:01"
STRANGER = "DE:AD:BE:EF:00:01"


class RecordingSink:
    def __init__(self) -> None:
        self.updates: list[tuple[str, Sighting | None]] = []

    def update(self, device: str, sighting: Sighting | None) -> None:
        self.updates.append((device, sighting))

    def adopt(self, device: str, sighting: Sighting) -> None:
        pass

    def forget(self, device: str) -> None:
        pass


def fast_source(mode: ScanMode = ScanMode.AUTO, duty: DutyCycle | None = None) -> BleakSource:
    return BleakSource(mode=mode, duty=duty, probe_interval=0.2, backoff=lambda _n: 0.1)


async def test_adverts_and_changing_rssi_reach_the_tracker(fake_bluez: FakeBlueZ) -> None:
    registry = Registry()
    registry.replace_all([DeviceSpec("patient-1", WEARABLE)])
    source = fast_source()
    sink, metrics = RecordingSink(), Metrics()
    monitor = Monitor("gw1", Tracker(), registry, sink, metrics, clock=source.clock)
    seen: list[Advert] = []

    def on_advert(advert: Advert) -> None:
        seen.append(advert)
        monitor.on_advert(advert)

    task = asyncio.create_task(source.run(on_advert))
    try:
        await eventually(lambda: fake_bluez.adapter.discovering)
        # No AdvertisementMonitorManager1 here: auto mode must fall back to active.
        assert source.health.healthy
        assert source.health.mode == "active"
        assert fake_bluez.adapter.discovery_filters[-1]["Transport"].value == "le"

        rssi_sequence = [-60, -58, -61, -59, -90, -91, -92]
        for i, rssi in enumerate(rssi_sequence):
            fake_bluez.advertise(WEARABLE, rssi, manufacturer_data={0x0059: b"\x01"})
            fake_bluez.advertise(STRANGER, -40)
            await eventually(lambda target=2 * (i + 1): len(seen) >= target)

        ours = [a for a in seen if a.address == WEARABLE]
        # every RSSI change arrived through PropertiesChanged, in order
        assert [a.rssi for a in ours] == rssi_sequence
        assert ours[0].manufacturer_data == {0x0059: b"\x01"}
        assert ours[0].name == "wearable"

        state = monitor.tracker.state("patient-1")
        assert state is not None
        assert state.present  # claimed at the 3rd strong advert
        # the smoothed value ignores neither the drop entirely nor follows it blindly
        assert state.rssi is not None
        assert -92 < state.rssi < -58
        # the stranger was heard but never tracked or handed to the publisher
        dropped = metrics.registry.get_sample_value(
            "cloud4iot_gateway_monitor_adverts_total", {"result": "dropped"}
        )
        assert dropped == len(rssi_sequence)
        assert all(device == "patient-1" for device, _ in sink.updates)
        assert monitor.tracker.state(STRANGER) is None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # the scan was stopped on the way out
    assert not fake_bluez.adapter.discovering


async def test_bluez_restart_makes_it_unhealthy_then_it_recovers(fake_bluez: FakeBlueZ) -> None:
    seen: list[Advert] = []
    source = fast_source(mode=ScanMode.ACTIVE)
    task = asyncio.create_task(source.run(seen.append))
    try:
        await eventually(lambda: source.health.healthy and fake_bluez.adapter.discovering)
        fake_bluez.advertise(WEARABLE, -60)
        await eventually(lambda: len(seen) == 1)

        fake_bluez.stop()  # bluetoothd dies ...
        await eventually(lambda: not source.health.healthy)
        assert source.health.total_failures >= 1
        await fake_bluez.restart()  # ... and comes back with no discovery session
        await eventually(lambda: source.health.healthy and fake_bluez.adapter.discovering)

        fake_bluez.advertise(WEARABLE, -55)
        await eventually(lambda: len(seen) == 2)
        assert seen[-1].rssi == -55
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_powered_off_adapter_is_unhealthy_until_powered(fake_bluez: FakeBlueZ) -> None:
    source = fast_source(mode=ScanMode.ACTIVE)
    task = asyncio.create_task(source.run(lambda _a: None))
    try:
        await eventually(lambda: source.health.healthy)
        fake_bluez.adapter.set_powered(False)
        await eventually(lambda: not source.health.healthy)
        assert "powered off" in source.health.reason
        fake_bluez.adapter.set_powered(True)
        await eventually(lambda: source.health.healthy and fake_bluez.adapter.discovering)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_duty_cycle_stops_and_restarts_discovery(fake_bluez: FakeBlueZ) -> None:
    source = fast_source(mode=ScanMode.ACTIVE, duty=DutyCycle(on=0.3, period=0.6))
    task = asyncio.create_task(source.run(lambda _a: None))
    try:
        await eventually(lambda: fake_bluez.adapter.start_calls >= 3, within=10.0)
        assert fake_bluez.adapter.stop_calls >= 2
        # while paused, the radio hears nothing
        await eventually(lambda: not fake_bluez.adapter.discovering)
        assert not fake_bluez.advertise(WEARABLE, -60)
        assert fake_bluez.dropped >= 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("fake_bluez", [True], ids=["monitor-manager"], indirect=True)
async def test_auto_mode_scans_passively_where_bluez_allows_it(fake_bluez: FakeBlueZ) -> None:
    seen: list[Advert] = []
    source = fast_source()
    task = asyncio.create_task(source.run(seen.append))
    try:
        assert fake_bluez.monitor_manager is not None
        await eventually(lambda: source.health.healthy)
        assert source.health.mode == "passive"
        assert len(fake_bluez.monitor_manager.monitors) == 1  # bleak's monitor object
        assert fake_bluez.adapter.start_calls == 0  # no active discovery at all
        for rssi in (-70, -65):
            fake_bluez.advertise(WEARABLE, rssi)
        await eventually(lambda: len(seen) == 2)
        assert [a.rssi for a in seen] == [-70, -65]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert fake_bluez.monitor_manager.monitors == []  # unregistered on the way out


def test_no_bus_address_leaks_between_tests() -> None:
    # the fixture sets DBUS_SYSTEM_BUS_ADDRESS only for the tests that use it
    assert "fake-bluez" not in os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "")
