"""narrow.affinity_patch: the JSON Patch, applied, pins the pod to exactly the chosen
nodes, keeps everything else, and passes the apiserver's pod validation rules."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from admission_cases import POLICY, apply_patch, expr, facts, pod, required, world

from cloud4iot.vocabulary import NARROWED_ANNOTATION
from extender.admission.fit import PodConstraints
from extender.admission.narrow import Narrowed, Skipped, affinity_patch, decide, pinned_by_name
from extender.state.snapshot import NodeFacts

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
CHOSEN = Narrowed(("e3", "e1"), feasible=5)


def patched(p: dict[str, Any], narrowed: Narrowed = CHOSEN) -> dict[str, Any]:
    return apply_patch(p, affinity_patch(p, narrowed))


def terms_of(p: dict[str, Any]) -> list[dict[str, Any]]:
    terms: list[dict[str, Any]] = p["spec"]["affinity"]["nodeAffinity"][REQUIRED][
        "nodeSelectorTerms"
    ]
    return terms


def name_in(node: str) -> dict[str, Any]:
    return {"key": "metadata.name", "operator": "In", "values": [node]}


def assert_valid_for_the_apiserver(p: dict[str, Any]) -> None:
    """ValidateNodeFieldSelectorRequirement (kube 1.36): a metadata.name requirement
    holds exactly one value; ValidateNodeSelector: at least one term."""
    terms = terms_of(p)
    assert terms
    for term in terms:
        for field in term.get("matchFields") or []:
            assert field["key"] == "metadata.name"
            assert field["operator"] in ("In", "NotIn")
            assert len(field["values"]) == 1, field


def test_a_pod_without_affinity_gets_one_term_per_chosen_node() -> None:
    out = patched(pod())
    assert out["spec"]["affinity"] == {
        "nodeAffinity": {
            REQUIRED: {
                "nodeSelectorTerms": [
                    {"matchFields": [name_in("e3")]},
                    {"matchFields": [name_in("e1")]},
                ]
            }
        }
    }
    assert_valid_for_the_apiserver(out)
    assert out["spec"]["containers"] == pod()["spec"]["containers"]


def test_other_affinities_are_kept() -> None:
    anti = {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone"}]}
    out = patched(pod(affinity={"podAntiAffinity": anti}))
    assert out["spec"]["affinity"]["podAntiAffinity"] == anti
    assert [t["matchFields"] for t in terms_of(out)] == [[name_in("e3")], [name_in("e1")]]


def test_preferred_node_affinity_is_kept_and_a_requirement_added() -> None:
    preferred = [{"weight": 5, "preference": {"matchExpressions": [expr("zone", "In", "a")]}}]
    p = pod(
        affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}}
    )
    node_affinity = patched(p)["spec"]["affinity"]["nodeAffinity"]
    assert node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] == preferred
    assert node_affinity[REQUIRED] == {
        "nodeSelectorTerms": [{"matchFields": [name_in("e3")]}, {"matchFields": [name_in("e1")]}]
    }


def test_every_required_term_is_anded_with_each_node() -> None:
    zone = {"matchExpressions": [expr("zone", "In", "a")]}
    gpu = {"matchExpressions": [expr("gpu", "Exists"), expr("zone", "NotIn", "b")]}
    out = patched(pod(affinity=required(zone, gpu)))
    terms = terms_of(out)
    assert len(terms) == 4
    for original in (zone, gpu):
        for node in CHOSEN.nodes:
            assert {**original, "matchFields": [name_in(node)]} in terms
    assert_valid_for_the_apiserver(out)


def test_a_term_with_match_fields_keeps_them_and_gains_the_name() -> None:
    # decide skips metadata.name terms; a term's own fields are still never dropped.
    fenced = {"matchFields": [expr("metadata.name", "NotIn", "e9")]}
    terms = terms_of(patched(pod(affinity=required(fenced))))
    assert terms == [
        {"matchFields": [expr("metadata.name", "NotIn", "e9"), name_in("e3")]},
        {"matchFields": [expr("metadata.name", "NotIn", "e9"), name_in("e1")]},
    ]


def test_an_empty_term_is_not_turned_into_a_match() -> None:
    zone = {"matchExpressions": [expr("zone", "In", "a")]}
    terms = terms_of(patched(pod(affinity=required({}, zone, {"matchExpressions": []}))))
    assert terms == [{**zone, "matchFields": [name_in(n)]} for n in CHOSEN.nodes]


def test_the_annotation_map_is_created_when_absent() -> None:
    out = patched(pod(annotations=False))
    assert out["metadata"]["annotations"] == {NARROWED_ANNOTATION: "2 of 5 feasible nodes"}


def test_the_annotation_is_added_beside_the_others() -> None:
    p = pod("anonymiser", "wearable")
    ops = affinity_patch(p, CHOSEN)
    # The key's '/' is escaped as ~1 in the JSON Pointer (RFC 6901).
    assert ops[0]["path"] == "/metadata/annotations/cloud4iot.io~1narrowed"
    assert patched(p)["metadata"]["annotations"] == {
        "cloud4iot.io/function": "anonymiser",
        "cloud4iot.io/device": "wearable",
        NARROWED_ANNOTATION: "2 of 5 feasible nodes",
    }


def test_every_operation_is_an_add_the_apiserver_can_apply_to_the_original() -> None:
    # apply_patch refuses a missing parent, as the apiserver's applier does.
    for p in (
        pod(),
        pod(annotations=False, affinity={}),
        pod(affinity={"nodeAffinity": {}}),
        pod(affinity=required({"matchExpressions": [expr("zone", "In", "a")]})),
    ):
        ops = affinity_patch(p, CHOSEN)
        assert {op["op"] for op in ops} == {"add"}
        assert_valid_for_the_apiserver(apply_patch(p, ops))


NODES: list[NodeFacts] = [
    *(facts(f"a{i}", labels={"zone": "a", "gpu": str(i)}) for i in range(8)),
    *(facts(f"b{i}", labels={"zone": "b", "gpu": str(i)}) for i in range(8)),
    facts("t0", labels={"zone": "a"}, taints=[{"key": "spot", "effect": "NoSchedule"}]),
    facts("g0", "gateway", labels={"zone": "b"}),
]
NOW = time.time()
WORLD = world(NODES, load={n.name: (i * 3 % 7) / 10 for i, n in enumerate(NODES)}, now=NOW)


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"nodeSelector": {"zone": "a"}},
        {"affinity": required({"matchExpressions": [expr("gpu", "Gt", "4")]})},
        {
            "affinity": required(
                {"matchExpressions": [expr("gpu", "Lt", "2")]},
                {"matchExpressions": [expr("zone", "In", "b"), expr("gpu", "In", "6", "7")]},
            )
        },
        {
            "nodeSelector": {"zone": "b"},
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        },
        {"tolerations": [{"key": "spot", "operator": "Exists"}]},
    ],
)
@pytest.mark.parametrize("k", [1, 3, 32])
def test_the_patched_pod_admits_exactly_the_chosen_nodes(spec: dict[str, Any], k: int) -> None:
    p = pod(**spec)
    outcome = decide(p, WORLD, POLICY, NOW, k, random.Random(k))
    assert isinstance(outcome, Narrowed)
    out = patched(p, outcome)
    before = PodConstraints.from_spec(p["spec"])
    after = PodConstraints.from_spec(out["spec"])
    assert {n.name for n in NODES if after.admits(n)} == set(outcome.nodes)
    assert all(before.admits(WORLD.nodes[n]) for n in outcome.nodes)
    assert_valid_for_the_apiserver(out)
    # The pin is what the NodeAffinity PreFilter reads: the union of the terms' names.
    assert {f["values"][0] for t in terms_of(out) for f in t["matchFields"]} == set(outcome.nodes)
    # Reinvoked (reinvocationPolicy IfNeeded), the webhook leaves the pinned pod alone.
    assert pinned_by_name(out["spec"])
    assert decide(out, WORLD, POLICY, NOW, k, random.Random(0)) == Skipped(
        "the pod already selects nodes by metadata.name"
    )
