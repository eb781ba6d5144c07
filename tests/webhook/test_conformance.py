"""The extender protocol as kube-scheduler speaks it, in both node-passing modes.

Modelled on the behaviours kube-scheduler's own extender tests check: PascalCase
keys, a bare array from prioritize, only given nodes answered, full Node objects
returned unchanged, permanent and transient refusals kept apart.
"""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
from webhook_cases import NODES, pod

from cloud4iot.policy.store import PolicyStore
from extender.app import create_app
from extender.protocol import RETRY_PREFIX
from extender.runtime import RUNTIME
from extender.settings import Settings
from extender.state.store import StateStore

NAMES = [n["metadata"]["name"] for n in NODES]
POLICY = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"


async def post(client, path, body):
    resp = await client.post(path, data=orjson.dumps(body))
    return resp.status, await resp.read()


async def test_filter_node_names_mode_answers_names_only(client):
    status, raw = await post(
        client,
        "/filter",
        {"Pod": pod("mhealth-consolidator", "wearable"), "Nodes": None, "NodeNames": NAMES},
    )
    assert status == 200
    result = orjson.loads(raw)
    assert set(result) == {
        "Nodes",
        "NodeNames",
        "FailedNodes",
        "FailedAndUnresolvableNodes",
        "Error",
    }
    assert result["Nodes"] is None
    assert result["Error"] == ""
    assert result["NodeNames"] == ["gw2"]  # nearest gateway that hears the wearable
    # cloud is a permanent refusal for a confidential class ...
    assert set(result["FailedAndUnresolvableNodes"]) == {"cloud1", "cloud2"}
    assert "tier cloud not allowed" in result["FailedAndUnresolvableNodes"]["cloud1"]
    # ... while overload and "not the gateway near the device" may change.
    assert "does not hear the device" in result["FailedNodes"]["gw1"]
    assert "nearest to gateway gw2" in result["FailedNodes"]["edge1"]
    every = (
        set(result["NodeNames"])
        | set(result["FailedNodes"])
        | set(result["FailedAndUnresolvableNodes"])
    )
    assert every == set(NAMES)


async def test_filter_overloaded_node_is_a_transient_refusal(client):
    status, raw = await post(client, "/filter", {"Pod": pod("anonymiser"), "NodeNames": NAMES})
    result = orjson.loads(raw)
    assert status == 200
    assert "cpu 97 percent above the limit 85 percent" in result["FailedNodes"]["gw1"]
    assert result["NodeNames"] == ["gw2", "edge1"]
    # kube-scheduler formats the reasons into its FailedScheduling Event as a format
    # string: a bare "%" would print as "%!a(MISSING)" there.
    reasons = [*result["FailedNodes"].values(), *result["FailedAndUnresolvableNodes"].values()]
    assert reasons
    assert not [r for r in reasons if "%" in r]


async def test_filter_never_answers_a_name_it_was_not_given(client):
    for p in (pod(), pod("anonymiser")):
        status, raw = await post(client, "/filter", {"Pod": p, "NodeNames": ["edge1", "ghost"]})
        result = orjson.loads(raw)
        assert status == 200
        answered = (
            set(result["NodeNames"])
            | set(result["FailedNodes"])
            | set(result["FailedAndUnresolvableNodes"])
        )
        assert answered <= {"edge1", "ghost"}


async def test_unmanaged_pod_keeps_nodes_the_cache_has_not_seen(client):
    # A node that just joined, or an extender still syncing: pods without a class
    # are not ours to hold back.
    status, raw = await post(client, "/filter", {"Pod": pod(), "NodeNames": ["edge1", "new-node"]})
    assert status == 200
    assert orjson.loads(raw)["NodeNames"] == ["edge1", "new-node"]


async def test_filter_unknown_node_name_is_refused_with_a_reason(client):
    status, raw = await post(
        client, "/filter", {"Pod": pod("anonymiser"), "NodeNames": ["edge1", "ghost"]}
    )
    result = orjson.loads(raw)
    assert status == 200
    assert result["NodeNames"] == ["edge1"]
    assert "not (yet) in the extender's node cache" in result["FailedNodes"]["ghost"]


async def test_filter_full_node_mode_returns_given_objects_unchanged(client):
    sent = copy.deepcopy(NODES)
    status, raw = await post(
        client,
        "/filter",
        {
            "Pod": pod("engine-diagnostic", mode="normal"),
            "Nodes": {"metadata": {}, "items": sent},
            "NodeNames": None,
        },
    )
    result = orjson.loads(raw)
    assert status == 200
    assert result["NodeNames"] is None
    kept = result["Nodes"]["items"]
    assert [n["metadata"]["name"] for n in kept] == ["gw2", "edge1", "cloud1", "cloud2"]
    assert kept[0] == NODES[1]  # byte-for-byte the object we were given
    assert kept[0]["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250
    assert "gw1" in result["FailedNodes"]


async def test_filter_keys_match_case_insensitively_like_go(client):
    status, raw = await post(client, "/filter", {"pod": pod(), "nodenames": ["gw1"]})
    assert status == 200
    assert orjson.loads(raw)["NodeNames"] == ["gw1"]


async def test_unmanaged_pod_keeps_every_node_with_equal_scores(client):
    _, raw = await post(client, "/filter", {"Pod": pod(), "NodeNames": NAMES})
    assert orjson.loads(raw)["NodeNames"] == NAMES
    _status, raw = await post(client, "/prioritize", {"Pod": pod(), "NodeNames": NAMES})
    scores = orjson.loads(raw)
    assert {s["Score"] for s in scores} == {0}


async def test_archs_annotation_refuses_other_architectures_as_unresolvable(client):
    p = pod(**{"cloud4iot.io/archs": "arm64"})
    _status, raw = await post(client, "/filter", {"Pod": p, "NodeNames": NAMES})
    result = orjson.loads(raw)
    assert result["NodeNames"] == ["gw1", "gw2"]
    assert set(result["FailedAndUnresolvableNodes"]) == {"edge1", "cloud1", "cloud2"}
    assert "no image for amd64" in result["FailedAndUnresolvableNodes"]["edge1"]


async def test_prioritize_returns_a_bare_array_for_exactly_the_given_nodes(client):
    given = ["cloud2", "edge1", "gw2"]
    status, raw = await post(
        client,
        "/prioritize",
        {"Pod": pod("engine-diagnostic", "wearable", "intensive"), "NodeNames": given},
    )
    scores = orjson.loads(raw)
    assert status == 200
    assert isinstance(scores, list)
    assert [s["Host"] for s in scores] == given
    assert all(isinstance(s["Score"], int) and 0 <= s["Score"] <= 10 for s in scores)
    by_host = {s["Host"]: s["Score"] for s in scores}
    assert by_host["gw2"] > by_host["edge1"] > by_host["cloud2"]


async def test_prioritize_mode_switch_changes_the_order(client):
    given = ["cloud1", "gw2"]
    _, raw = await post(
        client,
        "/prioritize",
        {"Pod": pod("engine-diagnostic", "wearable", "normal"), "NodeNames": given},
    )
    normal = {s["Host"]: s["Score"] for s in orjson.loads(raw)}
    _, raw = await post(
        client,
        "/prioritize",
        {"Pod": pod("engine-diagnostic", "wearable", "intensive"), "NodeNames": given},
    )
    intensive = {s["Host"]: s["Score"] for s in orjson.loads(raw)}
    assert normal["cloud1"] > normal["gw2"]
    assert intensive["gw2"] > intensive["cloud1"]


async def test_prioritize_full_node_mode(client):
    _status, raw = await post(
        client, "/prioritize", {"Pod": pod("anonymiser"), "Nodes": {"items": NODES[1:4]}}
    )
    scores = orjson.loads(raw)
    assert [s["Host"] for s in scores] == ["gw2", "edge1", "cloud1"]
    by_host = {s["Host"]: s["Score"] for s in scores}
    # anonymiser prefers edge over gateway; cloud is not allowed (filter refuses it, score 0)
    assert by_host["edge1"] > by_host["gw2"] > by_host["cloud1"] == 0


async def test_explain_ranks_every_cached_node_with_reasons(client):
    resp = await client.post("/explain", data=orjson.dumps(pod("mhealth-consolidator", "wearable")))
    assert resp.status == 200
    doc = await resp.json()
    assert doc["best"] == "gw2"
    assert next(n["node"] for n in doc["nodes"]) == "gw2"
    assert len(doc["nodes"]) == 5
    first = doc["nodes"][0]
    assert set(first["parts"]) == {"tier", "proximity", "load"}
    assert doc["policy"].startswith("default@")


async def test_empty_node_list_is_answered(client):
    status, raw = await post(client, "/filter", {"Pod": pod(), "NodeNames": []})
    assert status == 200
    assert orjson.loads(raw)["NodeNames"] == []


async def test_metrics_count_requests_by_mode_and_decisions(client):
    await post(
        client, "/filter", {"Pod": pod("mhealth-consolidator", "wearable"), "NodeNames": NAMES}
    )
    await post(client, "/filter", {"Pod": pod(), "Nodes": {"items": NODES}})
    await client.post("/filter", data=b"{")
    text = await (await client.get("/metrics")).text()
    assert (
        'cloud4iot_extender_requests_total{code="200",mode="nodeNames",verb="filter"} 1.0' in text
    )
    assert 'cloud4iot_extender_requests_total{code="200",mode="nodes",verb="filter"} 1.0' in text
    assert 'cloud4iot_extender_requests_total{code="400",mode="invalid",verb="filter"} 1.0' in text
    assert 'cloud4iot_extender_decisions_total{code="tier_not_allowed"} 2.0' in text
    assert 'cloud4iot_extender_request_duration_seconds_count{verb="filter"}' in text
    assert 'cloud4iot_extender_cached_objects{kind="node"} 5.0' in text


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200
    assert body["ready"] is True
    assert body["nodes"] == 5


async def test_not_ready_until_the_node_cache_synced(aiohttp_client):
    policy = POLICY
    settings = Settings(policy_path=policy, kubeconfig=Path("/nonexistent"))
    store = StateStore()
    app = create_app(settings, policy=PolicyStore.open(policy), state=store, sources=[])
    client = await aiohttp_client(app)
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert "first sync" in (await resp.json())["problems"][0]
    store.snapshot = store.snapshot.with_nodes({}, synced=True)
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert "device cache" in (await resp.json())["problems"][0]
    store.snapshot = store.snapshot.with_devices({}, synced=True)
    store.health("prometheus").detail = "refresh failed"
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200
    assert body["degraded"] == ["prometheus: refresh failed"]
    text = await (await client.get("/metrics")).text()
    assert 'cloud4iot_extender_source_up{source="prometheus"} 0.0' in text


def test_state_file_world_runs_on_its_own_clock():
    from datetime import UTC, datetime

    state = Path(__file__).resolve().parents[2] / "examples" / "simulate" / "cluster.yaml"
    settings = Settings(policy_path=POLICY, state_path=state)
    app = create_app(settings, policy=PolicyStore.open(POLICY), sources=[])
    written = datetime(2026, 11, 26, 10, 0, tzinfo=UTC).timestamp()  # the file's `now`
    assert 0 <= app[RUNTIME].clock() - written < 5
    assert "gw-hospital" in app[RUNTIME].state.snapshot.devices["patient-42-hr"].sightings


async def test_required_proximity_waits_for_the_device_cache(client, store):
    # After a restart, before the Devices are listed, "no gateway hears it" is not
    # known: refusing everywhere (transiently) beats misplacing to the edge.
    store.snapshot = store.snapshot.with_devices({}, synced=False)
    _, raw = await post(
        client, "/filter", {"Pod": pod("mhealth-consolidator", "wearable"), "NodeNames": NAMES}
    )
    result = orjson.loads(raw)
    # An error, not refusals: kube-scheduler retries it with backoff instead of
    # parking the pod until an event (the Devices' listing is not one it watches).
    assert result["NodeNames"] is None
    assert result["Error"].startswith(RETRY_PREFIX)
    assert "not loaded the Devices yet" in result["Error"]
    # Classes without a proximity rule are unaffected.
    _, raw = await post(client, "/filter", {"Pod": pod("anonymiser"), "NodeNames": ["edge1"]})
    assert orjson.loads(raw)["NodeNames"] == ["edge1"]


async def test_a_percent_sign_from_the_pod_reaches_the_scheduler_escaped(client):
    # kube-scheduler formats refusals into its Event: "%%" prints as the pod's "%".
    status, raw = await post(
        client, "/filter", {"Pod": pod("50%-sampler"), "Nodes": None, "NodeNames": NAMES}
    )
    assert status == 200
    result = orjson.loads(raw)
    reasons = [*result["FailedNodes"].values(), *result["FailedAndUnresolvableNodes"].values()]
    assert len(reasons) == len(NAMES)
    assert all("'50%%-sampler' is not defined" in r for r in reasons), reasons
