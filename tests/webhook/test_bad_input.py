"""Malformed requests get a 4xx with a reason; nothing answers 5xx or kills the service."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhook_cases import NODES, pod


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty body"),
        (b"{", "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b"{}", "missing Pod"),
        # Near misses of the field names are not the fields: named, not silently ignored.
        (b'{"Pod\\u0000": {}, "NodeNames": []}', "missing Pod (unknown keys: 'Pod\\x00'"),
        (b'{"Pods": {}, "NodeNames": []}', "missing Pod (unknown keys: 'Pods'"),
        (b'{" Pod": {}, "NodeNames": []}', "missing Pod (unknown keys: ' Pod'"),
        (b'{"P\\u043ed": {}, "NodeNames": []}', "missing Pod (unknown keys: 'P\u043ed'"),
        (b'{"Pod": null, "NodeNames": []}', "missing Pod"),
        (b'{"Pod": [], "NodeNames": []}', "Pod must be a Pod object"),
        (b'{"Pod": {}}', "neither Nodes nor NodeNames"),
        (b'{"Pod": {}, "NodeNames": "gw1"}', "NodeNames must be an array of strings"),
        (b'{"Pod": {}, "NodeNames": [1]}', "NodeNames must be an array of strings"),
        (b'{"Pod": {}, "Nodes": []}', "Nodes must be a NodeList"),
        (b'{"Pod": {}, "Nodes": {"items": [{}]}}', "Nodes.items[0] has no metadata.name"),
        (b'{"Pod": {}, "Nodes": {"items": 3}}', "Nodes.items must be an array"),
        (
            b'{"Pod": {"metadata": {"annotations": []}}, "NodeNames": []}',
            "annotations must be an object",
        ),
        (b'{"Pod": {}, "Nodes": {"items": []}, "NodeNames": []}', "both Nodes and NodeNames"),
        (b'{"Pod": {}, "Nodes": {"items": [{"metadata": {"name": ""}}]}}', "has no metadata.name"),
        (b'{"Pod": {}, "NodeNames": ["a", "b", "a"]}', "lists a node twice"),
        (
            b'{"Pod": {}, "Nodes": {"items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "a"}}]}}',
            "listed twice",
        ),
        (
            b'{"Pod": {}, "Nodes": {"items": [{"metadata": {"name": "a", "labels": {"cloud4iot.io/tier": ["gateway"]}}}]}}',
            "must be a string",
        ),
        (
            b'{"Pod": {"metadata": {"annotations": {"cloud4iot.io/archs": 5}}}, "NodeNames": []}',
            "must be a string",
        ),
    ],
)
@pytest.mark.parametrize("path", ["/filter", "/prioritize"])
async def test_malformed_bodies_get_400_with_reason(client, path, body, reason):
    resp = await client.post(path, data=body)
    assert resp.status == 400
    assert reason in (await resp.json())["error"]


ANNOTATED = {"metadata": {"annotations": {"cloud4iot.io/function": "mhealth-consolidator"}}}


@pytest.mark.parametrize(
    ("good", "near_miss", "reason"),
    [
        ({"Pod": ANNOTATED}, {"Pod\u0000": ANNOTATED}, "not a Pod object: unknown keys 'Pod\\x00'"),
        ({"pod": ANNOTATED}, {"pod ": ANNOTATED}, "not a Pod object: unknown keys 'pod '"),
        ({"POD": ANNOTATED}, {"Pods": ANNOTATED}, "not a Pod object: unknown keys 'Pods'"),
        # A Cyrillic o and a long s (Go's decoder would fold it to s) look like letters
        # of the names; they are not.
        ({"Pod": ANNOTATED}, {"P\u043ed": ANNOTATED}, "unknown keys 'P\u043ed'"),
        (
            {"Pod": ANNOTATED, "NodeNames": ["gw1"]},
            {"Pod": ANNOTATED, "NodeNames\u0000": ["gw1"]},
            "unknown keys in ExtenderArgs: 'NodeNames\\x00'",
        ),
        (
            {"Pod": ANNOTATED, "nodenames": ["gw1"]},
            {"Pod": ANNOTATED, "NodeName\u017f": ["gw1"]},
            "unknown keys in ExtenderArgs: 'NodeName\u017f'",
        ),
        ({"Pod": ANNOTATED, "NodeNames": ["gw1"]}, {"NodeNames": ["gw1"]}, "missing Pod"),
        (ANNOTATED, {"Metadata": ANNOTATED["metadata"]}, "unknown keys 'Metadata'"),
        (ANNOTATED, {**ANNOTATED, "metadata\u0000": {}}, "unknown keys 'metadata\\x00'"),
        ({**ANNOTATED, "kind": "Pod"}, {**ANNOTATED, "kind": "Deployment"}, "expected a Pod"),
        ({"Pod": ANNOTATED}, {"Pod": {"Metadata": {}}}, "Pod is not a Pod object"),
        (ANNOTATED, {}, "empty object"),
        (ANNOTATED, [ANNOTATED], "expected a Pod object or ExtenderArgs, got an array"),
    ],
)
async def test_explain_takes_its_documented_shapes_and_refuses_their_near_misses(
    client, good, near_miss, reason
):
    resp = await client.post("/explain", data=orjson.dumps(good))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["function"] == "mhealth-consolidator"
    resp = await client.post("/explain", data=orjson.dumps(near_miss))
    assert resp.status == 400, await resp.text()
    assert reason in (await resp.json())["error"]


async def test_body_over_the_limit_gets_413(client):
    huge = {"Pod": pod(), "NodeNames": ["n" * 100] * 4000}  # ~400 KiB > 256 KiB limit
    resp = await client.post("/filter", data=orjson.dumps(huge))
    assert resp.status == 413


async def test_wrong_method_gets_405(client):
    assert (await client.get("/filter")).status == 405
    assert (await client.put("/prioritize", data=b"{}")).status == 405
    assert (await client.post("/healthz")).status == 405


async def test_service_still_answers_after_bad_input(client):
    for body in (
        b"",
        b"\x00\xff",
        b'{"Pod": 1}',
        b'{"Pod": {}, "NodeNames": [1e999999]}',
        b"[" * 10000,
    ):
        await client.post("/filter", data=body)
    resp = await client.post("/filter", data=orjson.dumps({"Pod": pod(), "NodeNames": ["gw1"]}))
    assert resp.status == 200


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
annotations = st.dictionaries(
    st.sampled_from(
        [
            "cloud4iot.io/function",
            "cloud4iot.io/device",
            "cloud4iot.io/mode",
            "cloud4iot.io/archs",
            "x",
        ]
    ),
    st.sampled_from(
        [
            "mhealth-consolidator",
            "engine-diagnostic",
            "anonymiser",
            "wearable",
            "intensive",
            "arm64",
            "",
            ",",
        ]
    )
    | json_values,
)
pods = (
    st.fixed_dictionaries({"metadata": st.fixed_dictionaries({"annotations": annotations})})
    | json_values
)
label_values = (
    st.sampled_from(["gateway", "edge", "cloud", "fog", "", "arm64", "amd64"]) | json_values
)
fuzzed_nodes = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {
                "name": st.sampled_from(["gw1", "gw2", "edge1", "x", ""]) | json_values,
                "labels": st.dictionaries(
                    st.sampled_from(["cloud4iot.io/tier", "kubernetes.io/arch", "x"]),
                    label_values,
                )
                | json_values,
            }
        )
    }
)
node_lists = st.lists(st.sampled_from(NODES) | fuzzed_nodes | json_values, max_size=6)
bodies = (
    st.fixed_dictionaries(
        {},
        optional={
            "Pod": pods,
            "NodeNames": st.lists(
                st.sampled_from(["gw1", "gw2", "edge1", "cloud1", "ghost"]) | json_values,
                max_size=6,
            )
            | json_values,
            "Nodes": st.fixed_dictionaries({"items": node_lists}) | json_values,
        },
    )
    | json_values
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, path=st.sampled_from(["/filter", "/prioritize", "/explain"]))
async def test_fuzz_no_5xx(client, body, path):
    resp = await client.post(path, data=orjson.dumps(body))
    assert resp.status in (200, 400), await resp.text()
    payload = await resp.json()
    if resp.status == 400:
        assert payload["error"]
    elif path == "/prioritize":
        assert all(0 <= s["Score"] <= 10 for s in payload)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200))
async def test_fuzz_raw_bytes_no_5xx(client, raw):
    resp = await client.post("/filter", data=raw)
    assert resp.status in (200, 400)
