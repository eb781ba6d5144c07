"""Device objects -> what this gateway tracks; strangers never match."""

from __future__ import annotations

from collections.abc import Iterable

from gateway_monitor.irk import make_rpa, parse_irk
from gateway_monitor.registry import DeviceSpec, Registry, parse_device

IRK_HEX = "ec0234a357c8ad05341010a60a397d9b"


def device(name: str, address: str, **spec: object) -> dict[str, object]:
    return {"metadata": {"name": name}, "spec": {"address": address, **spec}}


def test_parse_device_reads_address_irk_thresholds_and_our_own_entry() -> None:
    obj = device("band", "aa:bb:cc:dd:ee:ff", identityKey=IRK_HEX, rssi={"enter": -70})
    obj["status"] = {"sightings": [{"node": "gw2", "rssi": -80}, {"node": "gw1", "rssi": -66}]}
    spec = parse_device(obj, node="gw1")
    assert spec == DeviceSpec(
        "band", "AA:BB:CC:DD:EE:FF", irk=parse_irk(IRK_HEX), enter=-70.0, own_rssi=-66
    )
    assert parse_device({"metadata": {"name": "x"}, "spec": {}}) is None
    bad_irk = parse_device(device("y", "AA:BB:CC:DD:EE:01", identityKey="zz"))
    assert bad_irk is not None
    assert bad_irk.irk is None


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def devices_changed(self, upserted: Iterable[DeviceSpec], removed: Iterable[str]) -> None:
        self.calls.append(([s.name for s in upserted], list(removed)))


def test_lookup_by_address_and_by_irk_and_removal() -> None:
    registry, recorder = Registry(), Recorder()
    registry.listeners.append(recorder)
    irk = parse_irk(IRK_HEX)
    registry.replace_all(
        [DeviceSpec("watch", "AA:BB:CC:DD:EE:FF"), DeviceSpec("band", "C0:00:00:00:00:01", irk=irk)]
    )
    rpa = make_rpa(irk, b"\x12\x34\x56")
    assert registry.lookup("AA:BB:CC:DD:EE:FF") == "watch"
    assert registry.lookup(rpa) == "band"
    assert registry.lookup("DE:AD:BE:EF:00:01") is None
    assert registry.lookup(make_rpa(bytes(16), b"\x12\x34\x56")) is None

    # a status-only change (another gateway's apply) notifies nobody
    registry.upsert(DeviceSpec("band", "C0:00:00:00:00:01", irk=irk, own_rssi=-70))
    assert recorder.calls == [(["watch", "band"], [])]
    registry.upsert(DeviceSpec("band", "C0:00:00:00:00:01", irk=irk, enter=-60))
    assert recorder.calls[-1] == (["band"], [])

    registry.remove("band")
    assert recorder.calls[-1] == ([], ["band"])
    assert registry.lookup(rpa) is None
    registry.replace_all([])
    assert recorder.calls[-1] == ([], ["watch"])
    assert registry.lookup("AA:BB:CC:DD:EE:FF") is None
