"""device_facts caches parsed sightings (the replay's and the reflector's hot path): the
facts are the same as parsing each entry afresh, malformed entries are still skipped,
and the watch time still caps a gateway clock running ahead."""

from __future__ import annotations

from typing import Any

from extender.state.devices import _parse_sighting, device_facts


def device(*entries: Any) -> dict[str, Any]:
    return {"metadata": {"name": "d"}, "status": {"sightings": list(entries)}}


def test_cached_facts_equal_fresh_parses() -> None:
    entries = [
        {"node": f"gw-{i}", "rssi": -50 - i, "lastSeen": f"2026-12-06T01:00:{i:02d}Z"}
        for i in range(20)
    ]
    for _ in range(3):  # the second and third read come from the cache
        facts = device_facts(device(*entries))
        assert facts.sightings == {
            e["node"]: _parse_sighting(e["node"], e["rssi"], e["lastSeen"]) for e in entries
        }
    assert facts.sightings["gw-3"].rssi == -53.0
    assert isinstance(facts.sightings["gw-3"].rssi, float)


def test_malformed_entries_are_skipped_through_the_cache_too() -> None:
    good = {"node": "gw-a", "rssi": -60, "lastSeen": "2026-12-06T01:00:00Z"}
    bad = [
        {"node": "gw-b", "rssi": True, "lastSeen": "2026-12-06T01:00:00Z"},
        {"node": "gw-c", "rssi": -60, "lastSeen": "not a time"},
        {"node": "gw-d", "rssi": "-60", "lastSeen": "2026-12-06T01:00:00Z"},
        {"node": 5, "rssi": -60, "lastSeen": "2026-12-06T01:00:00Z"},
        {"node": "gw-e", "rssi": -60, "lastSeen": {"x": 1}},
        "gw-f",
    ]
    for _ in range(2):
        assert list(device_facts(device(good, *bad)).sightings) == ["gw-a"]
    epoch = {"node": "gw-g", "rssi": -61.5, "lastSeen": 1_700_000_000}
    assert device_facts(device(epoch)).sightings["gw-g"].last_seen == 1_700_000_000.0


def test_a_clock_ahead_is_capped_at_the_watch_time_after_a_cached_read() -> None:
    entry = {"node": "gw-a", "rssi": -60, "lastSeen": "2026-12-06T01:00:10Z"}
    seen = device_facts(device(entry)).sightings["gw-a"].last_seen
    capped = device_facts(device(entry), observed_at=seen - 5).sightings["gw-a"]
    assert capped.last_seen == seen - 5
    assert device_facts(device(entry), observed_at=seen + 5).sightings["gw-a"].last_seen == seen
