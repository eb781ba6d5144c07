"""Discovery through unmodified bleak on the fake org.bluez (issue 25): a heart-rate strap
advertising 0x180D from an unregistered address becomes a candidate with its address
type as BlueZ reports it; a stranger without the service and a rotating private address
stay dropped. (Here beside the fake BlueZ fixture it needs.)"""

from __future__ import annotations

import asyncio

import pytest
from fake_bluez import FakeBlueZ

from cloud4iot.deviceclass import parse_class
from gateway_monitor.discovery import CandidateBook, ClassBook, Discovery
from gateway_monitor.metrics import Metrics
from gateway_monitor.monitor import Monitor
from gateway_monitor.registry import Registry
from gateway_monitor.scanner import Advert, BleakSource, ScanMode
from gateway_monitor.tracker import Tracker
from tests.waiting import eventually

pytestmark = pytest.mark.dbus

STRAP = "C0:FF:EE:25:00:01"  # static random (top bits 11)
ROTATING = "4A:FF:EE:25:00:02"  # resolvable private (top bits 01)
STRANGER = "DE:AD:BE:EF:25:03"
HR = "0000180d-0000-1000-8000-00805f9b34fb"


class NoSink:
    def update(self, device: str, sighting: object) -> None:
        raise AssertionError(f"{device} was tracked")

    def adopt(self, device: str, sighting: object) -> None: ...

    def forget(self, device: str) -> None: ...


async def test_a_strap_advertising_heart_rate_becomes_a_candidate(fake_bluez: FakeBlueZ) -> None:
    hr = parse_class(
        {
            "metadata": {"name": "hr-strap", "uid": "u"},
            "spec": {"discovery": {"serviceUUIDs": ["180D"]}, "arrivalRSSI": -70, "functions": []},
        }
    )
    discovery = Discovery(ClassBook({"hr-strap": hr}), CandidateBook())
    source = BleakSource(mode=ScanMode.ACTIVE, probe_interval=0.2, backoff=lambda _n: 0.1)
    metrics = Metrics()
    monitor = Monitor(
        "gw-hospital",
        Tracker(),
        Registry(),
        NoSink(),
        metrics,
        clock=source.clock,
        discovery=discovery,
    )
    seen: list[Advert] = []

    def on_advert(advert: Advert) -> None:
        seen.append(advert)
        monitor.on_advert(advert)

    task = asyncio.create_task(source.run(on_advert))
    try:
        await eventually(lambda: fake_bluez.adapter.discovering)
        fake_bluez.advertise(STRAP, -60, name="HRM strap", uuids=[HR])
        fake_bluez.advertise(ROTATING, -55, name="HRM phone", uuids=[HR])
        fake_bluez.advertise(STRANGER, -40, name="kettle")
        await eventually(lambda: len(seen) >= 3)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    strap = next(a for a in seen if a.address == STRAP)
    assert strap.address_type == "random"
    assert HR in strap.service_uuids
    assert list(discovery.book.entries) == [STRAP]
    assert discovery.book.entries[STRAP].device_class == "hr-strap"
    sample = metrics.registry.get_sample_value
    assert sample("cloud4iot_gateway_monitor_adverts_total", {"result": "candidate"}) == 1
    assert sample("cloud4iot_gateway_monitor_adverts_total", {"result": "dropped"}) == 2
