"""Device objects -> what this gateway tracks; strangers never match."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable

import pytest

from cloud4iot.devices import IDENTITY_KEYS_SECRET
from gateway_monitor.irk import make_rpa, parse_irk
from gateway_monitor.registry import DeviceSpec, Registry, parse_device, parse_identity_keys

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


# --- the keys: the identity-keys Secret first, the Device's deprecated spec second -----

OTHER_HEX = "00112233445566778899aabbccddeeff"


def secret(**keys: str) -> dict[str, object]:
    data = {name: base64.b64encode(value.encode()).decode() for name, value in keys.items()}
    return {"metadata": {"name": IDENTITY_KEYS_SECRET}, "data": data}


def test_the_secrets_key_wins_over_the_devices_and_follows_the_secret() -> None:
    registry = Registry()
    legacy, stored = parse_irk(OTHER_HEX), parse_irk(IRK_HEX)
    registry.replace_all([DeviceSpec("band", "C0:00:00:00:00:01", irk=legacy)])
    registry.set_keys(parse_identity_keys(secret(band=IRK_HEX)))
    assert registry.irk("band") == stored
    assert registry.lookup(make_rpa(stored, b"\x12\x34\x56")) == "band"
    assert registry.lookup(make_rpa(legacy, b"\x12\x34\x56")) is None
    # a key only in the Secret (a Device approved with --irk) resolves too
    registry.replace_all([DeviceSpec("band", "C0:00:00:00:00:01")])
    assert registry.lookup(make_rpa(stored, b"\x01\x02\x03")) == "band"
    # the Secret deleted (or its key removed): no key any more
    registry.set_keys({})
    assert registry.lookup(make_rpa(stored, b"\x01\x02\x03")) is None
    # a key for a Device that does not exist resolves nothing
    registry.set_keys(parse_identity_keys(secret(ghost=IRK_HEX)))
    assert registry.lookup(make_rpa(stored, b"\x01\x02\x03")) is None


def test_the_devices_legacy_key_serves_while_the_secret_has_none_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry(namespace="iot-gateways")
    legacy = parse_irk(IRK_HEX)
    spec = parse_device(device("band", "C0:00:00:00:00:01", identityKey=IRK_HEX))
    assert spec is not None
    with caplog.at_level(logging.WARNING, "gateway_monitor.registry"):
        registry.replace_all([spec])
        assert registry.lookup(make_rpa(legacy, b"\x12\x34\x56")) == "band"
        assert not caplog.records  # the Secret not read yet: it may hold the key
        registry.set_keys(parse_identity_keys(None))  # listed: no Secret
        assert registry.lookup(make_rpa(legacy, b"\x12\x34\x56")) == "band"
        registry.set_keys(parse_identity_keys(secret(watch=OTHER_HEX)))
        registry.upsert(DeviceSpec("band", "C0:00:00:00:00:01", irk=legacy, enter=-60))
        registry.replace_all([spec])
    (warning,) = caplog.records  # once per Device, however often it is rebuilt
    text = warning.getMessage()
    assert "Device band" in text
    assert "spec.identityKey" in text
    assert f"Secret {IDENTITY_KEYS_SECRET} in namespace iot-gateways" in text
    assert "cloud4iot devices approve band --irk HEX" in text
    assert "kubectl -n iot-gateways patch secret" in text
    # moved: the Secret's key serves, and there is nothing more to warn about
    caplog.clear()
    registry.set_keys(parse_identity_keys(secret(band=IRK_HEX)))
    assert registry.lookup(make_rpa(legacy, b"\x12\x34\x56")) == "band"
    assert not caplog.records


def test_a_bad_key_in_either_place_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = parse_irk(IRK_HEX)
    bad_secret = secret(band="zz" * 16, strap=IRK_HEX[:30], watch=IRK_HEX)
    bad_secret["data"]["ring"] = "not base64!"  # type: ignore[index]
    with caplog.at_level(logging.WARNING, "gateway_monitor.registry"):
        keys = parse_identity_keys(bad_secret)
        bad_device = parse_device(device("watch", "C0:00:00:00:00:02", identityKey="zz"))
    assert keys == {"watch": good}
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in ("band", "strap", "ring"):
        assert f"the key for Device {name} is not 32 hex digits; ignored" in warned
    assert "Device watch: identityKey is not 32 hex digits" in warned
    assert bad_device is not None
    assert bad_device.irk is None
    # a bad key in the Secret: the Device's legacy key still serves
    registry = Registry()
    registry.replace_all([DeviceSpec("band", "C0:00:00:00:00:01", irk=good)])
    registry.set_keys(keys)
    assert registry.lookup(make_rpa(good, b"\x12\x34\x56")) == "band"
    assert parse_identity_keys({"data": None}) == {}
