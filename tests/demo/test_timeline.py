"""The demo timeline without a cluster: data round trip, move routes, the picture."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from demo import timeline as tl
from demo.timeline import DeviceState, Mark, Move, Sample, Timeline

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NODES = ["gw-home", "gw-hospital", "edge-1", "cloud-1", "cloud-2"]
MOVES = [  # (t, reason, from, to) as in the demo
    (60.0, "Roaming", "gw-home", "gw-hospital"),
    (95.0, "Offloading", "gw-hospital", "edge-1"),
    (125.0, "Onloading", "edge-1", "gw-hospital"),
]


def consolidator_at(t: float) -> list[str]:
    if t < 10:
        return []
    for start, _, src, dst in reversed(MOVES):
        if t >= start + 4:
            return [dst]
        if t >= start:
            return sorted([src, dst])  # make-before-break: both Ready for a moment
    return ["gw-home"]


def synthetic(duration: float = 160.0, step: float = 0.5) -> Timeline:
    """A run shaped like the demo's: the patient walks home -> hospital at 40 s,
    gw-hospital's memory is full from 90 s to 120 s, the engine goes cloud -> gateway."""
    samples = []
    for i in range(int(duration / step) + 1):
        t = i * step
        walked = min(1.0, max(0.0, (t - 40) / 7))
        patient = DeviceState(
            rssi={"gw-home": round(-60 - 30 * walked), "gw-hospital": round(-92 + 31 * walked)},
            nearest="gw-home" if t < 52 else "gw-hospital",
        )
        if walked == 1.0:
            del patient.rssi["gw-home"]  # out of range: no sighting any more
        engine = DeviceState(rssi={"gw-home": -62}, nearest="gw-home")
        load = {n: {"cpu": 0.05, "memory": 0.10} for n in NODES}
        if 90 <= t < 120:
            load["gw-hospital"]["memory"] = 0.95
        functions = {
            "omh-consolidator": consolidator_at(t),
            "engine-diagnostic": ["cloud-1"]
            if 135 <= t < 150
            else (["gw-home"] if t >= 150 else []),
        }
        samples.append(
            Sample(t, {"patient-42-hr": patient, "truck-7-engine": engine}, load, functions)
        )
    moves = [
        Move(
            t,
            f"2030-01-01T00:00:{int(t) % 60:02d}Z",
            "omh-consolidator",
            "health/omh-consolidator-42",
            reason,
            src,
            dst,
            f"{reason} (rollout) health/omh-consolidator-42 pod p: {src} -> {dst}; score 0 -> 10; policy demo@1",
        )
        for t, reason, src, dst in MOVES
    ]
    marks = [
        Mark(t, step, label)
        for t, step, label in [
            (0, "1", "patient at home"),
            (8, "2", "consolidator deployed"),
            (30, "3", "patient walks"),
            (90, "4", "gw-hospital memory 95%"),
            (118, "5", "memory freed"),
            (133, "6", "engine diagnostic (normal)"),
            (140, "6", "mode intensive"),
        ]
    ]
    return Timeline(
        started_at=1_900_000_000.0,
        interval=step,
        devices=["patient-42-hr", "truck-7-engine"],
        nodes=NODES,
        functions=["omh-consolidator", "engine-diagnostic"],
        limits={"mhealth-consolidator": {"cpu": 0.85, "memory": 0.9}},
        samples=samples,
        moves=moves,
        marks=marks,
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "Roaming (rollout) health/omh-42 pod p-1: gw-home -> gw-hospital; why; score 0 -> 10",
            ("gw-home", "gw-hospital"),
        ),
        (
            "Onloading (rollout) health/omh-42: edge-1 -> gw-hospital; score 3 -> 9",
            ("edge-1", "gw-hospital"),
        ),
        ("DeviceAway (park) health/omh-42: gw-home -> -; score 0 -> -", ("gw-home", None)),
        ("DeviceBack (unpark) health/omh-42: - -> -; policy p", (None, None)),
        ("something else entirely", (None, None)),
    ],
)
def test_route_of_a_rebalancer_message(message, expected):
    assert tl.route(message) == expected


def test_placements_collapse_repeats_and_skip_rollout_overlaps():
    timeline = synthetic()
    assert timeline.placements("omh-consolidator") == [
        "gw-home",
        "gw-hospital",
        "edge-1",
        "gw-hospital",
    ]
    assert timeline.placements("engine-diagnostic") == ["cloud-1", "gw-home"]
    assert timeline.placements("nothing") == []


def test_json_round_trip(tmp_path):
    timeline = synthetic()
    path = tmp_path / "t.json"
    path.write_text(json.dumps(timeline.to_dict()))
    again = tl.load(path)
    assert again == timeline
    assert json.loads(path.read_text())["started"] == "2030-03-17T17:46:40Z"


def test_save_writes_the_picture_the_data_and_a_page(tmp_path):
    timeline = synthetic()
    out = tl.save(timeline, tmp_path / "sub" / "demo-timeline.png", title="unit test")
    assert out == {
        "png": tmp_path / "sub" / "demo-timeline.png",
        "json": tmp_path / "sub" / "demo-timeline.json",
        "html": tmp_path / "sub" / "demo-timeline.html",
    }
    width, height = png_size(out["png"])
    assert width >= 800
    assert height >= 600
    assert 20_000 < out["png"].stat().st_size < 300_000  # a real picture, small enough to commit
    data = json.loads(out["json"].read_text())
    assert [(m["reason"], m["from_node"], m["to_node"]) for m in data["moves"]] == [
        m[1:] for m in MOVES
    ]
    page = out["html"].read_text()
    assert "data:image/png;base64," in page
    assert "gw-hospital &rarr; edge-1" in page


def test_render_survives_an_empty_or_partial_timeline(tmp_path):
    empty = Timeline(started_at=0.0, interval=0.5, devices=["d"], nodes=["n"], functions=["f"])
    tl.save(empty, tmp_path / "empty.png")
    assert png_size(tmp_path / "empty.png")[0] > 0
    partial = synthetic(duration=20)
    partial.samples[3].devices.clear()  # a probe failed: the sample lacks that part
    partial.samples[4].load.clear()
    partial.moves.append(
        Move(12.0, "x", "omh-consolidator", "health/x", "DeviceAway", "gw-home", None, "m")
    )
    tl.save(partial, tmp_path / "partial.png")
    assert png_size(tmp_path / "partial.png")[0] > 0
