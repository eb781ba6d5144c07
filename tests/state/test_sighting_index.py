"""GatewayReports merged into DeviceFacts: only labelled gateways' reports count."""

from __future__ import annotations

from typing import Any

import pytest

from cloud4iot.devices import rfc3339
from cloud4iot.vocabulary import GATEWAY_LABEL, TIER_LABEL
from extender.state.devices import FirstRead, device_facts
from extender.state.liveness import LeaseFacts, heard_at, lease_facts
from extender.state.reports import SightingIndex, report_facts
from extender.state.snapshot import DeviceFacts, NodeFacts, Sighting

T = 1_700_000_000.0


def node(name: str, gateway: bool) -> NodeFacts:
    labels = {TIER_LABEL: "gateway"} | ({GATEWAY_LABEL: "true"} if gateway else {})
    return NodeFacts(name=name, tier="gateway", arch="arm64", labels=labels)


def report(name: str, heard: dict[str, int], at: float = T) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "sightings": [
                {"device": d, "rssi": r, "lastSeen": rfc3339(at)} for d, r in heard.items()
            ]
        },
    }


def device(name: str) -> DeviceFacts:
    return device_facts({"metadata": {"name": name}, "spec": {"address": "C0:00:00:00:00:01"}})


def heard(index: SightingIndex, name: str) -> dict[str, float]:
    return {n: s.rssi for n, s in index.merged[name].sightings.items()}


@pytest.fixture
def index() -> SightingIndex:
    idx = SightingIndex()
    idx.set_nodes({"gw-a": node("gw-a", True), "gw-b": node("gw-b", True)})
    idx.set_nodes({**{"gw-a": node("gw-a", True), "gw-b": node("gw-b", True)}})
    idx.observe_device("patient", None, device("patient"))
    return idx


def test_reports_of_gateways_become_the_devices_sightings(index: SightingIndex) -> None:
    a = report_facts(report("gw-a", {"patient": -60, "unknown": -50}))
    index.observe_report("gw-a", None, a)
    index.observe_report("gw-b", None, report_facts(report("gw-b", {"patient": -70})))
    assert heard(index, "patient") == {"gw-a": -60, "gw-b": -70}
    assert "unknown" not in index.merged  # no Device object: nothing to place
    # gw-a stops hearing it; then gw-b's report goes away
    index.observe_report("gw-a", a, report_facts(report("gw-a", {})))
    assert heard(index, "patient") == {"gw-b": -70}
    index.observe_report("gw-b", index.reports["gw-b"], None)
    assert heard(index, "patient") == {}


def test_a_report_of_a_node_not_labelled_a_gateway_is_ignored(index: SightingIndex) -> None:
    index.set_nodes({"gw-a": node("gw-a", True), "cloud-1": node("cloud-1", False)})
    index.observe_report("cloud-1", None, report_facts(report("cloud-1", {"patient": 20})))
    index.observe_report("gw-a", None, report_facts(report("gw-a", {"patient": -60})))
    assert heard(index, "patient") == {"gw-a": -60}
    # a report of a node that does not exist at all counts neither
    index.observe_report("gw-ghost", None, report_facts(report("gw-ghost", {"patient": 0})))
    assert heard(index, "patient") == {"gw-a": -60}
    # the admin labels cloud-1 a gateway: it votes; the label goes: it stops voting
    index.set_nodes({"gw-a": node("gw-a", True), "cloud-1": node("cloud-1", True)})
    assert heard(index, "patient") == {"gw-a": -60, "cloud-1": 20}
    index.set_nodes({"gw-a": node("gw-a", False), "cloud-1": node("cloud-1", False)})
    assert heard(index, "patient") == {}


def test_a_device_created_after_the_report_gets_its_sightings(index: SightingIndex) -> None:
    index.observe_report("gw-a", None, report_facts(report("gw-a", {"late": -55})))
    index.observe_device("late", None, device("late"))
    assert heard(index, "late") == {"gw-a": -55}
    index.observe_device("late", index.devices["late"], None)
    assert "late" not in index.merged


def test_a_future_last_seen_is_capped_at_observation() -> None:
    facts = report_facts(report("gw-a", {"patient": -60}, at=T + 3600), observed_at=T)
    assert facts.sightings["patient"] == Sighting("gw-a", -60.0, T, reported=True)


def test_a_future_last_seen_is_capped_at_its_first_read_not_at_every_read() -> None:
    """An unchanged object delivered again (a relist; for a Device, any event, our own
    status writes among them) must not make a silent gateway's entry "seen now"."""
    ahead = FirstRead()
    obj = report("gw-a", {"patient": -60}, at=T + 86400)  # a gateway a day ahead, then silent
    obj["status"]["candidates"] = [
        {
            "address": "c4:00:00:00:00:01",
            "deviceClass": "hr",
            "rssi": -55,
            "lastSeen": rfc3339(T + 86400),
        }
    ]
    for read_at in (T, T + 600, T + 3600):
        facts = report_facts(obj, observed_at=read_at, ahead=ahead)
        assert facts.sightings["patient"].last_seen == T
        assert facts.candidates[0].last_seen == T
    newer = report("gw-a", {"patient": -60}, at=T + 86500)  # a new write: its own first read
    assert report_facts(newer, T + 700, ahead).sightings["patient"].last_seen == T + 700
    assert report_facts(obj, T + 800).sightings["patient"].last_seen == T + 800  # (no memo)
    legacy = {
        "metadata": {"name": "patient"},
        "status": {"sightings": [{"node": "gw-a", "rssi": -50, "lastSeen": rfc3339(T + 86400)}]},
    }
    assert device_facts(legacy, T, ahead).sightings["gw-a"].last_seen == T
    assert device_facts(legacy, T + 600, ahead).sightings["gw-a"].last_seen == T
    past = report("gw-a", {"patient": -60}, at=T - 5)  # (a lastSeen behind us is as written)
    assert report_facts(past, T, ahead).sightings["patient"].last_seen == T - 5


def test_malformed_entries_are_skipped_and_a_nameless_report_refused() -> None:
    obj = report("gw-a", {"ok": -60})
    obj["status"]["sightings"] += [{"device": "x", "rssi": True, "lastSeen": rfc3339(T)}, 7]
    assert set(report_facts(obj).sightings) == {"ok"}
    with pytest.raises(ValueError, match=r"no metadata\.name"):
        report_facts({"status": {}})


def test_a_device_listed_twice_takes_its_last_entry() -> None:
    # The list is atomic (the apiserver does not refuse a repeated device): a gateway
    # can only confuse its own sighting, and every reader settles it the same way.
    obj = report("gw-a", {"patient": -60})
    obj["status"]["sightings"].append({"device": "patient", "rssi": -75, "lastSeen": rfc3339(T)})
    assert report_facts(obj).sightings["patient"].rssi == -75.0


def test_a_devices_own_legacy_sighting_merges_and_the_newer_entry_wins() -> None:
    idx = SightingIndex()
    idx.set_nodes({"gw-a": node("gw-a", True)})
    old = {"node": "gw-a", "rssi": -80, "lastSeen": rfc3339(T - 5)}
    legacy = device_facts({"metadata": {"name": "p"}, "status": {"sightings": [old]}})
    idx.observe_device("p", None, legacy)
    assert heard(idx, "p") == {"gw-a": -80}
    idx.observe_report("gw-a", None, report_facts(report("gw-a", {"p": -60})))
    assert heard(idx, "p") == {"gw-a": -60}
    # a legacy entry of a node not labelled a gateway never counts
    rogue = {"node": "cloud-1", "rssi": 20, "lastSeen": rfc3339(T)}
    idx.observe_device(
        "p",
        legacy,
        device_facts({"metadata": {"name": "p"}, "status": {"sightings": [old, rogue]}}),
    )
    assert heard(idx, "p") == {"gw-a": -60}


def test_observe_sees_each_merged_change_once() -> None:
    seen: list[tuple[str, bool, bool]] = []
    idx = SightingIndex(observe=lambda n, o, w: seen.append((n, o is None, w is None)))
    idx.set_nodes({"gw-a": node("gw-a", True)})
    idx.observe_device("p", None, device("p"))
    a = report_facts(report("gw-a", {"p": -60}))
    idx.observe_report("gw-a", None, a)
    idx.observe_report("gw-a", a, a)  # same content: no change to announce
    assert seen == [("p", True, False), ("p", False, False)]


def lease(name: str, renewed: str, at: float, holder: str | None = None) -> LeaseFacts:
    return lease_facts(
        {
            "metadata": {"name": name},
            "spec": {
                "holderIdentity": holder or name,
                "leaseDurationSeconds": 40,
                "renewTime": renewed,
            },
        },
        at,
    )


def seen(index: SightingIndex, name: str) -> dict[str, float]:
    return {n: s.last_seen for n, s in index.merged[name].sightings.items()}


def test_a_gateways_entries_are_seen_when_its_lease_is_renewed(index: SightingIndex) -> None:
    """docs/gateway-writes.md 2: the report is not rewritten at rest; the Lease is."""
    index.observe_report("gw-a", None, report_facts(report("gw-a", {"patient": -60}, at=T)))
    index.observe_report("gw-b", None, report_facts(report("gw-b", {"patient": -70}, at=T)))
    assert seen(index, "patient") == {"gw-a": T, "gw-b": T}
    first = lease("gw-a", "r1", T + 10)
    index.observe_lease("gw-a", None, first)  # first seen: alive now
    assert seen(index, "patient") == {"gw-a": T + 10, "gw-b": T}
    renewal = lease("gw-a", "r2", T + 20)
    index.observe_lease("gw-a", first, renewal)
    assert seen(index, "patient") == {"gw-a": T + 20, "gw-b": T}
    # the same renewTime again (a relabel, a resync) is no renewal
    index.observe_lease("gw-a", renewal, lease("gw-a", "r2", T + 50))
    assert seen(index, "patient") == {"gw-a": T + 20, "gw-b": T}
    # a report write that lands later keeps the liveness
    index.observe_report(
        "gw-a", index.reports["gw-a"], report_facts(report("gw-a", {"patient": -58}, at=T + 5))
    )
    assert seen(index, "patient")["gw-a"] == T + 20
    assert index.merged["patient"].sightings["gw-a"].rssi == -58
    assert index.merged["patient"].sightings["gw-a"].reported


def test_a_relist_gives_every_gateway_one_grace_to_renew(index: SightingIndex) -> None:
    """After our view resumes (an apiserver outage: nobody could renew), every Lease
    counts as seen alive at the relist; a deleted Lease leaves the entries to age."""
    index.observe_report("gw-a", None, report_facts(report("gw-a", {"patient": -60}, at=T)))
    old = lease("gw-a", "r1", T + 10)
    index.observe_lease("gw-a", None, old)
    index.relisted({"gw-a": lease("gw-a", "r1", T + 100)}, T + 100)
    assert seen(index, "patient") == {"gw-a": T + 100}
    index.relisted({"gw-a": old}, T + 90)  # never backwards
    assert seen(index, "patient") == {"gw-a": T + 100}
    index.observe_lease("gw-a", old, None)
    index.observe_report(
        "gw-a", index.reports["gw-a"], report_facts(report("gw-a", {"patient": -60}, at=T))
    )
    assert seen(index, "patient") == {"gw-a": T}


def test_a_lease_held_by_another_name_or_never_renewed_is_refused() -> None:
    with pytest.raises(ValueError, match="held by"):
        lease("gw-a", "r1", T, holder="gw-b")
    with pytest.raises(ValueError, match="never renewed"):
        lease("gw-a", "", T)


def test_a_gateway_that_lapsed_long_ago_gets_no_grace_at_start_nor_at_a_relist(
    index: SightingIndex,
) -> None:
    """A gateway dead for an hour (its Lease and report left behind) must not vote again
    at its old RSSI because we started or our Lease watch relisted."""
    index.set_nodes({n: node(n, True) for n in ("gw-a", "gw-b", "gw-c")})
    index.observe_report("gw-a", None, report_facts(report("gw-a", {"patient": -45}, at=T)))
    index.observe_report("gw-b", None, report_facts(report("gw-b", {"patient": -70}, at=T)))
    index.observe_report("gw-c", None, report_facts(report("gw-c", {"patient": -80}, at=T)))
    start = T + 3600
    dead = lease("gw-a", rfc3339(T), start)  # renewed an hour ago, by its own clock
    live = lease("gw-b", rfc3339(start - 5), start)
    index.observe_lease("gw-a", None, dead)
    index.observe_lease("gw-b", None, live)
    index.relisted({"gw-a": dead, "gw-b": live}, start)
    assert seen(index, "patient") == {"gw-a": T, "gw-b": start, "gw-c": T}
    # gw-c was alive for a while, then its monitor died; later our watch breaks and
    # relists: gw-b (alive when it broke) gets the grace, gw-c and gw-a do not.
    index.observe_lease("gw-c", None, lease("gw-c", "c1", start + 10))
    for k in range(1, 30):
        index.observe_lease("gw-b", live, renewed := lease("gw-b", f"b{k}", start + 10 * k))
        live = renewed
    index.relisted(
        {"gw-a": dead, "gw-b": live, "gw-c": lease("gw-c", "c1", start + 400)}, start + 400
    )
    assert seen(index, "patient") == {"gw-a": T, "gw-b": start + 400, "gw-c": start + 10}


def test_the_first_read_memo_is_bounded_oldest_first() -> None:
    ahead = FirstRead(per_gateway=2)
    for i, read_at in enumerate((T, T + 1, T + 2)):
        assert ahead.cap(("report", "gw-a", f"d{i}"), "x", T + 99, read_at) == read_at
    assert len(ahead.first["gw-a"]) == 2
    assert ahead.cap(("report", "gw-a", "d2"), "x", T + 99, T + 50) == T + 2  # kept
    assert ahead.cap(("report", "gw-a", "d0"), "x", T + 99, T + 50) == T + 50  # forgotten


def test_one_gateways_flood_of_future_stamps_keeps_anothers_first_reads() -> None:
    """Review (sec 2): gw-evil rewrites its report with 1088 ever-new future stamps a
    write; gw-b (its clock ahead, then silent) keeps its entries' first reads, so a
    relist does not make them "seen now". Only gw-evil's own oldest values go."""
    ahead = FirstRead()
    silent = report("gw-b", {"patient": -60}, at=T + 86400)
    assert report_facts(silent, T, ahead).sightings["patient"].last_seen == T
    for write in range(20):  # 20 x 1088 keys: above the old shared bound of 16,384
        at = T + 86400 + write
        flood = report("gw-evil", {f"d{i}": -50 for i in range(1024)}, at=at)
        flood["status"]["candidates"] = [
            {
                "address": f"C4:00:00:00:{write:02X}:{i:02X}",
                "deviceClass": "hr",
                "rssi": -50,
                "lastSeen": rfc3339(at),
            }
            for i in range(64)
        ]
        report_facts(flood, T + 1 + write, ahead)
    legacy = {
        "metadata": {"name": "patient"},
        "status": {"sightings": [{"node": "gw-b", "rssi": -60, "lastSeen": rfc3339(T + 86400)}]},
    }
    assert device_facts(legacy, T + 30, ahead).sightings["gw-b"].last_seen == T + 30
    relisted_at = T + 3600
    assert report_facts(silent, relisted_at, ahead).sightings["patient"].last_seen == T
    assert device_facts(legacy, relisted_at, ahead).sightings["gw-b"].last_seen == T + 30
    assert len(ahead.first["gw-evil"]) == ahead.per_gateway
    newest = report("gw-evil", {"d0": -50}, at=T + 86400 + 19)  # its last write: kept
    assert report_facts(newest, relisted_at, ahead).sightings["d0"].last_seen == T + 20


def test_the_gateways_remembered_are_bounded_oldest_first() -> None:
    ahead = FirstRead(gateways=2)
    for i, gw in enumerate(("gw-a", "gw-b", "gw-c")):
        assert ahead.cap(("candidate", gw, "C4:00:00:00:00:01"), "x", T + 99, T + i) == T + i
    assert list(ahead.first) == ["gw-b", "gw-c"]
    assert ahead.cap(("device", "patient", "gw-c"), "y", T + 99, T + 5) == T + 5
    assert ahead.cap(("candidate", "gw-c", "C4:00:00:00:00:01"), "x", T + 99, T + 9) == T + 2


def test_all_first_reads_together_are_bounded_and_the_largest_gateway_gives_up() -> None:
    """Many gateways ahead at once: the values of all together stay under `limit` (4,096
    gateways x 4,096 each was ~3 GiB); past it the gateway holding the most loses its
    oldest, so one flooding gateway still evicts only its own."""
    ahead = FirstRead(per_gateway=8, limit=10)
    for i in range(2):
        ahead.cap(("report", "gw-b", f"d{i}"), "x", T + 99, T)
    for i in range(30):
        ahead.cap(("report", "gw-evil", f"d{i}"), "x", T + 99, T + 1 + i)
    assert ahead.size == sum(map(len, ahead.first.values())) == 10
    assert len(ahead.first["gw-b"]) == 2  # untouched
    for i in range(2):  # and still capped at their first read
        assert ahead.cap(("report", "gw-b", f"d{i}"), "x", T + 99, T + 50) == T
    for i in range(3):  # a third gateway: room made by gw-evil again
        ahead.cap(("candidate", "gw-c", f"a{i}"), "x", T + 99, T + 60)
    assert ahead.size == 10
    assert (len(ahead.first["gw-b"]), len(ahead.first["gw-c"])) == (2, 3)


def test_an_entry_counts_as_heard_at_its_lastseen_or_its_gateways_later_renewal() -> None:
    assert heard_at(100.0, None) == 100.0  # no Lease seen: its own lastSeen
    assert heard_at(100.0, 90.0) == 100.0  # renewed before it was heard
    assert heard_at(100.0, 130.0) == 130.0  # renewed since: a live gateway still hears it
