"""The main demo on the devcluster: every placement it claims really happens."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from demo import opening, timeline
from demo.scenario import PATIENT, recorder_for, run, save_timeline

pytestmark = pytest.mark.cluster


def test_demo_roams_offloads_onloads_and_switches_mode(devcluster, kube_api, tmp_path):
    lines: list[str] = []
    recorder = recorder_for(devcluster)
    result = run(devcluster, say=lines.append, recorder=recorder)
    where = {s.name: s.node for s in result.steps}
    assert where["placed"] == "gw-home"  # the patient starts at home
    assert where["roamed"] == "gw-hospital"  # follows the wearable
    assert where["offloaded"] == "edge-1"  # up, but never to the cloud (confidential)
    assert where["onloaded"] == "gw-hospital"  # back down when the gateway frees up
    assert where["engine-normal"] in {"cloud-1", "cloud-2"}
    assert where["engine-intensive"] == "gw-home"  # the gateway that hears the engine
    assert any("tier cloud not allowed" in line for line in lines)
    # The opening: the unregistered strap discovered, its two functions made from the
    # class's templates and placed at the hospital, parked once switched off, and its
    # Device forgotten (after forgetAfter, 45 s, from its last lease-refreshed sighting).
    assert where["discovered"] == "gw-hospital"
    seconds = {s.name: s.seconds for s in result.steps}
    assert 30 <= seconds["parked"] < 60  # the monitor's 30 s away timeout + awayAfter 5 s
    assert seconds["forgotten"] >= 45
    # The consolidators (host processes beside the kwok pods) lost nothing over three moves
    # with the cloud ingest down from the roaming to the onloading: every batch, once, in order.
    batches = result.batches
    assert batches is not None
    assert batches.instances == 4  # placed, roamed, offloaded, onloaded
    assert batches.queued > 50
    assert batches.handed > 0  # queues went with the moves
    assert (batches.arrived, batches.missing, batches.problems) == (batches.queued, 0, [])
    # Each move was the rebalancer's, and its Event says why and where.
    detail = {s.name: s.detail for s in result.steps}
    assert detail["roamed"].startswith("Roaming: Roaming (rollout)")
    assert "gw-home -> gw-hospital" in detail["roamed"]
    assert detail["offloaded"].startswith("Offloading: Offloading (rollout)")
    assert "memory 95 percent above the limit 90 percent" in detail["offloaded"]
    assert detail["onloaded"].startswith("Onloading: Onloading (rollout)")
    assert "edge-1 -> gw-hospital" in detail["onloaded"]
    # The demo cleans up after itself: the shared cluster is left as it was.
    devices = client.CustomObjectsApi(kube_api).list_cluster_custom_object(
        "cloud4iot.io", "v1alpha1", "devices"
    )
    assert PATIENT not in {d["metadata"]["name"] for d in devices["items"]}

    # The timeline picture is written where asked, and the demo says where.
    png = tmp_path / "demo-timeline.png"
    said = save_timeline(recorder, png)
    assert str(png) in said
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000
    assert "data:image/png;base64," in png.with_suffix(".html").read_text()
    # The data behind it: the rebalancer's moves in order, with their routes ...
    recorded = timeline.Timeline.from_dict(json.loads(png.with_suffix(".json").read_text()))
    moves = [m for m in recorded.moves if m.function == "omh-consolidator"]
    assert [(m.reason, m.from_node, m.to_node) for m in moves] == [
        ("Roaming", "gw-home", "gw-hospital"),
        ("Offloading", "gw-hospital", "edge-1"),
        ("Onloading", "edge-1", "gw-hospital"),
    ]
    assert moves[0].t < moves[1].t < moves[2].t
    # ... the placements the steps report, in the same order ...
    assert recorded.placements("omh-consolidator") == [
        where[s] for s in ("placed", "roamed", "offloaded", "onloaded")
    ]
    assert recorded.placements("engine-diagnostic") == [
        where["engine-normal"],
        where["engine-intensive"],
    ]
    # ... the nearest decision following the wearable, before the roaming move ...
    patient = [(s.t, s.devices[PATIENT]) for s in recorded.samples if PATIENT in s.devices]
    switched = next(t for t, d in patient if d.nearest == "gw-hospital")
    assert any(d.nearest == "gw-home" for t, d in patient if t < switched)
    assert switched <= moves[0].t + 1  # Event times have second precision
    assert any("gw-hospital" in d.rssi and "gw-home" in d.rssi for _, d in patient)
    # ... and the opening: both strap functions ran on gw-hospital only and the
    # rebalancer never moved them (their class parked them), and the steps are marked.
    for function in opening.FUNCTIONS:
        assert recorded.placements(function) == ["gw-hospital"]
        assert [m for m in recorded.moves if m.function == function] == []
    labels = [m.label for m in recorded.marks if m.step == "0"]
    assert labels == ["strap on", "discovered", "placed", "strap off", "parked", "forgotten"]
    strap = [s.devices[opening.STRAP] for s in recorded.samples if opening.STRAP in s.devices]
    assert any(d.nearest == "gw-hospital" for d in strap)
    # ... and gw-hospital's memory above the limit, as the extender saw it, before the offload.
    full = [s.t for s in recorded.samples if s.load.get("gw-hospital", {}).get("memory", 0) >= 0.9]
    assert full
    assert full[0] <= moves[1].t + 1
