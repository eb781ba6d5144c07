"""Placement behaviour pinned through `cloud4iot simulate` (the admin's what-if tool).

Each case starts from examples/simulate/cluster.yaml and changes one fact of the
world, so a regression in a rule shows up as a different best node or reason.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from extender.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "simulate"
POLICY = ROOT / "policies" / "default.yaml"


@pytest.fixture
def state() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / "cluster.yaml").read_text())
    return data


def run(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    state: dict[str, Any],
    pod: str | dict[str, Any],
) -> dict[str, Any]:
    state_file = tmp_path / "state.yaml"
    state_file.write_text(yaml.safe_dump(state))
    if isinstance(pod, dict):
        pod_file = tmp_path / "pod.yaml"
        pod_file.write_text(yaml.safe_dump(pod))
    else:
        pod_file = EXAMPLES / pod
    argv = ["simulate", "-o", "json", "--policy", str(POLICY), "--state", str(state_file)]
    code = main([*argv, "--pod", str(pod_file)])
    out = capsys.readouterr().out
    assert code == 0, out
    doc: dict[str, Any] = orjson.loads(out)
    return doc


def by_node(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in doc["nodes"]}


def device(state: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in state["devices"] if d["metadata"]["name"] == name)


def test_roaming_device_heard_stronger_at_hospital_goes_there(tmp_path, capsys, state):
    doc = run(tmp_path, capsys, state, "pod-mhealth.yaml")
    assert doc["best"] == "gw-hospital"
    nodes = by_node(doc)
    assert nodes["gw-home"]["code"] == "not_nearest_gateway"
    assert not nodes["gw-home"]["unresolvable"]  # transient: the patient may walk back


def test_roaming_back_home_follows_the_sightings(tmp_path, capsys, state):
    dev = device(state, "patient-42-hr")
    dev["status"]["sightings"] = [
        {"node": "gw-home", "rssi": -52, "lastSeen": "2026-11-26T09:59:59Z"},
        {"node": "gw-hospital", "rssi": -88, "lastSeen": "2026-11-26T09:59:50Z"},
    ]
    dev["status"]["nearest"] = {"node": "gw-home"}
    doc = run(tmp_path, capsys, state, "pod-mhealth.yaml")
    assert doc["best"] == "gw-home"
    # -88 dBm is below the class threshold (-85): the hospital gateway no longer hears it.
    assert by_node(doc)["gw-hospital"]["code"] == "device_not_heard"


def test_nearest_decision_wins_over_a_momentarily_stronger_challenger(tmp_path, capsys, state):
    # The central hysteresis keeps gw-hospital; a raw reading at home is 2 dB stronger.
    dev = device(state, "patient-42-hr")
    dev["status"]["sightings"][0]["rssi"] = -53
    doc = run(tmp_path, capsys, state, "pod-mhealth.yaml")
    assert doc["best"] == "gw-hospital"


def test_stale_sighting_does_not_count(tmp_path, capsys, state):
    dev = device(state, "patient-42-hr")
    for s in dev["status"]["sightings"]:
        s["lastSeen"] = "2026-11-26T09:58:00Z"  # 2 minutes old, policy max 30s
    doc = run(tmp_path, capsys, state, "pod-mhealth.yaml")
    nodes = by_node(doc)
    assert doc["best"] == "edge-1"
    assert nodes["gw-hospital"]["code"] == "device_not_heard"
    assert "120s ago (max 30s)" in nodes["gw-hospital"]["reason"]


def test_offloading_overloaded_gateway_is_filtered_and_edge_wins(tmp_path, capsys, state):
    state["load"]["gw-hospital"]["cpu"] = 0.95
    doc = run(tmp_path, capsys, state, "pod-mhealth.yaml")
    nodes = by_node(doc)
    assert nodes["gw-hospital"]["code"] == "overloaded"
    assert "95 percent" in nodes["gw-hospital"]["reason"]
    assert not nodes["gw-hospital"]["unresolvable"]
    # gw-home still hears the wearable (-78 dBm): it beats the edge.
    assert doc["best"] == "gw-home"


def test_offloading_to_edge_when_every_hearing_gateway_is_full(tmp_path, capsys, state):
    state["load"]["gw-hospital"]["cpu"] = 0.95
    state["load"]["gw-home"]["memory"] = 0.97
    doc = run(tmp_path, capsys, state, "pod-mhealth.yaml")
    assert doc["best"] == "edge-1"
    assert by_node(doc)["gw-home"]["code"] == "overloaded"


def test_offloading_engine_diagnostic_goes_up_to_cloud(tmp_path, capsys, state):
    state["load"]["gw-home"]["cpu"] = 0.99
    state["load"]["edge-1"]["cpu"] = 0.97
    doc = run(tmp_path, capsys, state, "pod-engine-intensive.yaml")
    assert doc["best"] in {"cloud-1", "cloud-2"}
    assert by_node(doc)["gw-home"]["code"] == "overloaded"


def test_onloading_when_gateway_frees_up(tmp_path, capsys, state):
    state["load"]["gw-home"]["cpu"] = 0.99
    busy = run(tmp_path, capsys, state, "pod-engine-intensive.yaml")
    state["load"]["gw-home"]["cpu"] = 0.20
    free = run(tmp_path, capsys, state, "pod-engine-intensive.yaml")
    assert busy["best"] != "gw-home"
    assert free["best"] == "gw-home"


def test_confidentiality_mhealth_never_on_cloud_even_when_all_else_is_full(tmp_path, capsys, state):
    for node in ("gw-home", "gw-hospital", "edge-1"):
        state["load"][node]["cpu"] = 0.99
    doc = run(tmp_path, capsys, state, "pod-mhealth.yaml")
    nodes = by_node(doc)
    assert doc["best"] is None
    for cloud in ("cloud-1", "cloud-2"):
        assert not nodes[cloud]["feasible"]
        assert nodes[cloud]["unresolvable"]
        assert nodes[cloud]["code"] == "tier_not_allowed"


def test_mode_switch_intensive_prefers_the_gateway_near_the_engine(tmp_path, capsys, state):
    intensive = run(tmp_path, capsys, state, "pod-engine-intensive.yaml")
    normal = run(tmp_path, capsys, state, "pod-engine-normal.yaml")
    assert intensive["best"] == "gw-home"
    assert normal["best"] in {"cloud-1", "cloud-2"}
    # The far gateway does not hear the engine: it is not "the gateway near it".
    assert by_node(intensive)["gw-hospital"]["parts"]["tier"] == 0.0


def test_no_gateway_hears_the_wearable_edge_takes_it(tmp_path, capsys, state):
    device(state, "patient-42-hr")["status"] = {}
    doc = run(tmp_path, capsys, state, "pod-mhealth.yaml")
    nodes = by_node(doc)
    assert doc["best"] == "edge-1"
    assert nodes["gw-home"]["code"] == "device_not_heard"
    assert nodes["gw-hospital"]["code"] == "device_not_heard"


def test_architecture_list_refuses_other_arches_whatever_the_class(tmp_path, capsys, state):
    pod = yaml.safe_load((EXAMPLES / "pod-engine-normal.yaml").read_text())
    pod["metadata"]["annotations"]["cloud4iot.io/archs"] = "arm64"
    doc = run(tmp_path, capsys, state, pod)
    nodes = by_node(doc)
    assert doc["best"] == "gw-home"
    assert nodes["cloud-1"]["code"] == "arch_mismatch"
    assert nodes["cloud-1"]["unresolvable"]
    unmanaged = copy.deepcopy(pod)
    del unmanaged["metadata"]["annotations"]["cloud4iot.io/function"]
    doc = run(tmp_path, capsys, state, unmanaged)
    assert by_node(doc)["edge-1"]["code"] == "arch_mismatch"
    assert by_node(doc)["gw-home"]["feasible"]


def test_unmanaged_pod_passes_through_with_equal_scores(tmp_path, capsys, state):
    pod = {"metadata": {"name": "nginx", "namespace": "default"}}
    doc = run(tmp_path, capsys, state, pod)
    assert all(n["feasible"] for n in doc["nodes"])
    assert {n["score"] for n in doc["nodes"]} == {0}
    assert len(doc["nodes"]) == 5


def test_unknown_class_is_refused_everywhere_not_placed_blindly(tmp_path, capsys, state):
    pod = {"metadata": {"name": "x", "annotations": {"cloud4iot.io/function": "mhealth-typo"}}}
    doc = run(tmp_path, capsys, state, pod)
    assert doc["best"] is None
    assert {n["code"] for n in doc["nodes"]} == {"unknown_class"}
    assert all(n["unresolvable"] for n in doc["nodes"])


def test_stale_load_fails_open_by_default(tmp_path, capsys, state):
    state["load"]["gw-hospital"] = {"cpu": 0.99, "memory": 0.99, "age": "5m"}
    doc = run(tmp_path, capsys, state, "pod-mhealth.yaml")
    nodes = by_node(doc)
    # 5-minute-old overload is not trusted: no hard limit, neutral load part.
    assert nodes["gw-hospital"]["feasible"]
    assert nodes["gw-hospital"]["parts"]["load"] == 0.5


def test_bad_state_file_is_reported_with_the_entry(tmp_path, capsys, state):
    state["load"]["gw-home"]["cpu"] = 7
    state_file = tmp_path / "state.yaml"
    state_file.write_text(yaml.safe_dump(state))
    code = main(
        ["simulate", "--state", str(state_file), "--pod", str(EXAMPLES / "pod-mhealth.yaml")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "load.gw-home.cpu" in err


def test_a_json_state_file_answers_as_its_yaml_twin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], state: dict[str, Any]
) -> None:
    # JSON is read by orjson (a YAML parser peaks at ~5x the memory on big worlds);
    # the answer must not depend on which parser read the file.
    from_yaml = run(tmp_path, capsys, state, "pod-mhealth.yaml")
    state_file = tmp_path / "state.json"
    state_file.write_bytes(orjson.dumps(state, default=str))
    pod_file = EXAMPLES / "pod-mhealth.yaml"
    argv = ["simulate", "-o", "json", "--policy", str(POLICY), "--state", str(state_file)]
    argv += ["--pod", str(pod_file)]
    assert main(argv) == 0
    assert orjson.loads(capsys.readouterr().out) == from_yaml


def test_a_state_file_that_is_not_utf8_is_refused_with_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "state.yaml"
    bad.write_bytes(b"nodes: [\xff\xfe]")
    argv = [
        "simulate",
        "--policy",
        str(POLICY),
        "--state",
        str(bad),
        "--pod",
        str(EXAMPLES / "pod-mhealth.yaml"),
    ]
    assert main(argv) != 0
    captured = capsys.readouterr()
    assert str(bad) in captured.err + captured.out
