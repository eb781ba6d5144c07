"""The gateway's side of discovery: adverts of unregistered devices matched against the
DeviceClasses become a bounded candidate list; strangers stay dropped (issue 25)."""

from __future__ import annotations

from typing import Any

from cloud4iot.deviceclass import device_name, parse_class
from gateway_monitor.discovery import (
    CandidateBook,
    CandidateWriter,
    ClassBook,
    Discovery,
    candidates_field_manager,
)
from gateway_monitor.irk import make_rpa, parse_irk
from gateway_monitor.metrics import Metrics
from gateway_monitor.monitor import Monitor
from gateway_monitor.registry import DeviceSpec, Registry
from gateway_monitor.scanner import Advert
from gateway_monitor.tracker import Tracker

HR = "0000180d-0000-1000-8000-00805f9b34fb"


def classes() -> ClassBook:
    obj = {
        "metadata": {"name": "hr-strap", "uid": "u"},
        "spec": {
            "discovery": {"serviceUUIDs": ["180D"]},
            "arrivalRSSI": -70,
            "functions": [],
        },
    }
    return ClassBook({"hr-strap": parse_class(obj)})


def advert(address: str, rssi: int = -60, uuids: tuple[str, ...] = (HR,)) -> Advert:
    return Advert(address=address, rssi=rssi, t=0.0, service_uuids=uuids)


class Sink:
    def __init__(self) -> None:
        self.updates: list[str] = []

    def update(self, device: str, sighting: Any) -> None:
        self.updates.append(device)

    def adopt(self, device: str, sighting: Any) -> None: ...

    def forget(self, device: str) -> None: ...


def monitor(discovery: Discovery) -> tuple[Monitor, Metrics, Sink]:
    registry, metrics, sink = Registry(), Metrics(), Sink()
    registry.replace_all([DeviceSpec("known", "AA:AA:AA:AA:AA:AA")])
    m = Monitor("gw-a", Tracker(), registry, sink, metrics, clock=lambda: 0.0, discovery=discovery)
    return m, metrics, sink


def count(metrics: Metrics, result: str) -> float:
    return metrics.adverts.labels(result)._value.get()  # type: ignore[attr-defined,no-any-return]


def test_matching_adverts_are_candidates_strangers_and_weak_ones_dropped() -> None:
    d = Discovery(classes(), CandidateBook(), wall=lambda: 1000.0)
    m, metrics, sink = monitor(d)
    m.on_advert(advert("C0:FF:EE:00:00:01"))  # matches
    m.on_advert(advert("C0:FF:EE:00:00:02", rssi=-80))  # below the arrival RSSI
    m.on_advert(advert("C0:FF:EE:00:00:03", uuids=("0000180f-0000-1000-8000-00805f9b34fb",)))
    m.on_advert(advert("AA:AA:AA:AA:AA:AA"))  # a Device: tracked, not a candidate
    assert list(d.book.entries) == ["C0:FF:EE:00:00:01"]
    assert (count(metrics, "candidate"), count(metrics, "dropped"), count(metrics, "tracked")) == (
        1,
        2,
        1,
    )
    assert "C0:FF:EE:00:00:01" not in sink.updates  # never tracked as a device


def test_hear_without_an_advert_is_on_advert() -> None:
    """Replay's entry (Monitor.hear: address, rssi, time) counts and tracks as on_advert;
    a stranger is still offered to discovery, as a bare advert (no service UUIDs, so the
    class above cannot match it and it is dropped, never tracked)."""
    d = Discovery(classes(), CandidateBook(), wall=lambda: 1000.0)
    m, metrics, sink = monitor(d)
    m.hear("AA:AA:AA:AA:AA:AA", -60, 0.0)
    m.hear("C0:FF:EE:00:00:01", -60, 0.0)
    assert (count(metrics, "candidate"), count(metrics, "dropped"), count(metrics, "tracked")) == (
        0,
        1,
        1,
    )
    assert sink.updates == []  # one reading is not presence yet (arrive_samples)
    m.hear("AA:AA:AA:AA:AA:AA", -60, 0.5)
    m.hear("AA:AA:AA:AA:AA:AA", -60, 1.0)
    assert sink.updates == ["known"]
    offered: list[Advert] = []

    class Spy(Discovery):
        def offer(self, advert: Advert) -> bool:
            offered.append(advert)
            return True

    m2, metrics2, _ = monitor(Spy(classes(), CandidateBook(), wall=lambda: 1000.0))
    m2.hear("C0:FF:EE:00:00:01", -61, 2.5)
    assert offered == [Advert("C0:FF:EE:00:00:01", -61, 2.5)]
    assert count(metrics2, "candidate") == 1


def test_the_list_is_bounded_keeps_the_strongest_and_expires() -> None:
    book = CandidateBook(limit=3, ttl=30.0)
    for i, rssi in enumerate([-60, -65, -50, -70, -40]):
        book.observe(f"C0:FF:EE:00:00:0{i}", "hr-strap", rssi, 100.0)
    assert sorted(book.entries) == ["C0:FF:EE:00:00:00", "C0:FF:EE:00:00:02", "C0:FF:EE:00:00:04"]
    book.changed = False
    book.observe("C0:FF:EE:00:00:00", "hr-strap", -61, 120.0)  # heard again: no change
    assert not book.changed
    book.expire(131.0)  # the two last heard at 100 are gone
    assert list(book.entries) == ["C0:FF:EE:00:00:00"]
    assert book.changed


def test_a_candidates_rssi_is_in_the_crds_range() -> None:
    """One advert outside -127..20 dBm (HCI's 127 is "not available") made the apiserver
    refuse the whole candidate list; it is clamped as sightings are."""
    book = CandidateBook()
    book.observe("C0:FF:EE:00:00:01", "hr-strap", 127, 100.0)
    book.observe("C0:FF:EE:00:00:02", "hr-strap", -300, 100.0)
    rssi = [c["rssi"] for c in book.body("gw1")["status"]["candidates"]]
    assert rssi == [20, -127]


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def patch_cluster_custom_object_status(self, *args: Any, **kw: Any) -> None:
        self.calls.append({"body": args[4], **kw})


async def test_writer_applies_on_change_and_heartbeat_under_its_own_manager() -> None:
    now = [1000.0]
    book = CandidateBook()
    api = FakeApi()
    w = CandidateWriter(api, "gw-a", book, backoff=lambda n: 1.0, wall=lambda: now[0])
    assert not await w.step()  # nothing to say
    book.observe("C0:FF:EE:00:00:01", "hr-strap", -60, now[0])
    assert await w.step()
    call = api.calls[-1]
    assert call["field_manager"] == candidates_field_manager("gw-a")
    assert call["force"] is True
    assert call["body"]["status"]["candidates"][0]["address"] == "C0:FF:EE:00:00:01"
    assert set(call["body"]["status"]) == {"candidates"}  # never the sightings
    now[0] += 5
    book.observe("C0:FF:EE:00:00:01", "hr-strap", -60, now[0])
    assert not await w.step()  # same list, heartbeat not due
    now[0] += 5
    assert await w.step()  # heartbeat: lastSeen refreshed
    now[0] += 40
    assert await w.step()  # expired: an empty list is written once
    assert api.calls[-1]["body"]["status"]["candidates"] == []
    now[0] += 20
    assert not await w.step()


async def test_a_flood_of_random_matching_addresses_stays_bounded() -> None:
    """10,000 random addresses advertising Heart Rate over 60 s: the report lists at most
    64 candidates and the gateway writes it at most once per 2 s pass (31 writes)."""
    import random

    rng = random.Random(25)
    now = [0.0]
    d = Discovery(classes(), CandidateBook(), wall=lambda: now[0])
    api = FakeApi()
    w = CandidateWriter(api, "gw-a", d.book, backoff=lambda n: 1.0, wall=lambda: now[0])
    most = 0
    for i in range(10_000):
        now[0] = i * 0.006  # 60 s
        addr = ":".join(f"{rng.randrange(256):02X}" for _ in range(6))
        d.offer(advert(addr, rssi=rng.randrange(-70, -30)))
        if i % 333 == 0:  # the writer's 2 s pass
            await w.step()
            most = max(most, len(api.calls[-1]["body"]["status"]["candidates"]) if api.calls else 0)
    assert len(d.book.entries) == 64
    assert most <= 64
    assert len(api.calls) <= 31


def rpa_classes(policy: str) -> ClassBook:
    obj = {
        "metadata": {"name": "hr-strap", "uid": "u"},
        "spec": {
            "discovery": {"serviceUUIDs": ["180D"], "resolvablePrivateAddresses": policy},
            "arrivalRSSI": -70,
            "functions": [],
        },
    }
    return ClassBook({"hr-strap": parse_class(obj)})


def test_rotating_addresses_through_the_monitor_ignored_candidates_or_resolved_by_irk() -> None:
    """Issue 25 item 4 on the monitor's matching path: a class ignores resolvable private
    addresses unless it allows them (then each is a candidate, one Device per address);
    once the device's IRK is stored for its Device (`cloud4iot devices approve --irk`:
    the identity-keys Secret the monitor watches), its next rotating addresses are that
    Device's sightings, never new candidates."""
    irk = parse_irk("ec0234a357c8ad05341010a60a397d9b")
    first = "70:81:94:0D:FB:AA"  # the Core spec's sample: prand 708194, hash 0dfbaa
    rotated = make_rpa(irk, b"\x12\x34\x56")
    stranger = make_rpa(bytes(16), b"\x65\x43\x21")

    def rpa(address: str) -> Advert:
        return Advert(address=address, rssi=-60, t=0.0, service_uuids=(HR,), address_type="random")

    ignoring = Discovery(rpa_classes("ignore"), CandidateBook(), wall=lambda: 1000.0)
    m, metrics, _ = monitor(ignoring)
    for address in (first, rotated, stranger):
        m.on_advert(rpa(address))
    assert ignoring.book.entries == {}
    assert count(metrics, "dropped") == 3
    allowing = Discovery(rpa_classes("allow"), CandidateBook(), wall=lambda: 1000.0)
    m, metrics, sink = monitor(allowing)
    for address in (first, rotated):
        m.on_advert(rpa(address))
    assert sorted(allowing.book.entries) == sorted([first, rotated])  # one per address
    # approved with its IRK: the Device (named after its first address) follows it
    device = device_name("hr-strap", first)
    m.registry.upsert(DeviceSpec(device, first))
    m.registry.set_keys({device: irk})  # from the Secret
    fresh = CandidateBook()
    allowing.book = fresh
    for address in (first, rotated, make_rpa(irk, b"\x0a\x0b\x0c")):
        m.on_advert(rpa(address))
    m.on_advert(rpa(stranger))
    assert set(sink.updates) == {device}  # tracked as the Device, nothing else
    assert list(fresh.entries) == [stranger]  # only the other device is a candidate
    assert count(metrics, "tracked") == 3
