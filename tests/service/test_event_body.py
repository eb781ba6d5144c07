"""The one Event body every component records (cloud4iot/events.py)."""

from __future__ import annotations

from cloud4iot.events import MESSAGE_MAX, event_body


def test_an_event_names_its_object_bounds_its_message_and_tells_who_recorded_it() -> None:
    involved = {"apiVersion": "v1", "kind": "Pod", "namespace": "ns", "name": "p", "uid": "u"}
    body = event_body(involved, "ns", "Roaming", "x" * 5000, 0.0, "cloud4iot-rebalancer")
    assert body["metadata"] == {"generateName": "p.", "namespace": "ns"}
    assert body["involvedObject"] == involved
    assert body["involvedObject"] is not involved
    assert len(body["message"]) == MESSAGE_MAX
    assert body["type"] == "Normal"
    assert body["firstTimestamp"] == body["lastTimestamp"] == "1970-01-01T00:00:00Z"
    assert body["source"] == {"component": "cloud4iot-rebalancer"}
    assert "reportingInstance" not in body  # only when the caller knows its replica
    warned = event_body(
        involved, "ns", "MoveBlocked", "pdb", 0.0, "c", event_type="Warning", instance="r-1"
    )
    assert (warned["type"], warned["reportingInstance"]) == ("Warning", "r-1")
