"""Admission's room check: requests and allocatable counted as NodeResourcesFit counts them."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import pytest
from admission_cases import POLICY, facts, pod, world

from extender.admission.narrow import Narrowed, Skipped, decide
from extender.scoring import evaluate
from extender.state.resources import (
    NO_USE,
    NodeUse,
    PodUse,
    UsageIndex,
    fits,
    pod_requests,
    pod_use,
    quantity,
)
from extender.state.snapshot import NodeFacts, Snapshot

NOW = time.time()


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("cpu", "500m", 500),
        ("cpu", "1", 1000),
        ("cpu", 2, 2000),
        ("cpu", "0.1", 100),
        ("cpu", "100u", 1),  # rounded up, as MilliValue does
        ("memory", "1Gi", 2**30),
        ("memory", "1.5Gi", 3 * 2**29),
        ("memory", "128974848", 128974848),
        ("memory", "129e6", 129_000_000),
        ("memory", "123M", 123_000_000),
        ("memory", "500m", 1),  # half a byte: Value() rounds up
        ("pods", "110", 110),
        ("example.com/gpu", "2", 2),
        # Beyond int64: clamped as Value()/MilliValue() clamp, and at once (not a
        # 300,000-digit int, nor decimal.Overflow's 500 for the cpu's x1000).
        ("memory", "9223372036854775808", 2**63 - 1),
        ("memory", "1e300000", 2**63 - 1),
        ("cpu", "1e999999", 2**63 - 1),
        ("cpu", "1e999999Ei", 2**63 - 1),
        ("cpu", "-1e999999", -(2**63 - 1)),
        ("memory", "1e-999999n", 1),
    ],
)
def test_quantities_in_scheduler_units(name: str, raw: Any, expected: int) -> None:
    assert quantity(name, raw) == expected


@pytest.mark.parametrize("raw", ["", "1Zi", "one", "1 Gi", None, True, [], "--1"])
def test_malformed_quantities_raise(raw: Any) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        quantity("memory", raw)


def c(cpu: str | None = None, memory: str | None = None, **extra: Any) -> dict[str, Any]:
    requests = {k: v for k, v in {"cpu": cpu, "memory": memory}.items() if v is not None}
    return {"name": "x", "resources": {"requests": requests}, **extra}


def test_containers_are_summed_and_init_containers_counted_alone() -> None:
    spec = {
        "containers": [c("100m", "100Mi"), c("200m")],
        "initContainers": [c("250m", "50Mi"), c("50m", "300Mi")],
    }
    assert dict(pod_requests(spec)) == {"cpu": 300, "memory": 300 * 2**20}


def test_sidecars_run_beside_the_containers_and_the_later_init_containers() -> None:
    # kube's resource.PodRequests: a restartable init container adds to the sum and
    # to every init container started after it.
    spec = {
        "containers": [c("100m")],
        "initContainers": [
            c("200m"),
            c("50m", restartPolicy="Always"),
            c("300m"),
        ],
    }
    # containers 100 + sidecar 50 = 150; init peak: max(200, 50, 300 + 50) = 350
    assert dict(pod_requests(spec)) == {"cpu": 350}


def test_overhead_is_added_and_pod_level_requests_replace_cpu_and_memory() -> None:
    spec = {
        "containers": [c("100m", "64Mi", resources={"requests": {"cpu": "100m", "x/y": "1"}})],
        "resources": {"requests": {"cpu": "1", "x/y": "9"}},
        "overhead": {"cpu": "10m", "memory": "1Mi"},
    }
    assert dict(pod_requests(spec)) == {"cpu": 1010, "x/y": 1, "memory": 2**20}


def test_a_pod_without_requests_requests_nothing() -> None:
    assert dict(pod_requests({"containers": [{"name": "x"}]})) == {}


ALLOC = MappingProxyType({"cpu": 2000, "memory": 2**30, "pods": 3})


def test_fits_like_node_resources_fit() -> None:
    used = NodeUse(2, MappingProxyType({"cpu": 1500, "memory": 2**29}))
    assert fits({"cpu": 500}, ALLOC, used)
    assert not fits({"cpu": 501}, ALLOC, used)
    assert fits({"memory": 2**29}, ALLOC, used)
    assert not fits({"memory": 2**29 + 1}, ALLOC, used)
    # A resource the node does not offer, requested: refused; requested zero: ignored.
    assert not fits({"example.com/gpu": 1}, ALLOC, used)
    assert fits({"example.com/gpu": 0}, ALLOC, used)
    # One more pod past `pods`: refused even when it requests nothing.
    full = NodeUse(3, MappingProxyType({}))
    assert not fits({}, ALLOC, full)
    assert fits({}, ALLOC, NO_USE)
    # A node reporting no allocatable is not checked.
    assert fits({"cpu": 10**9}, None, full)


def test_the_usage_index_follows_binds_nominations_moves_and_deletes() -> None:
    index = UsageIndex()
    a = PodUse("n1", MappingProxyType({"cpu": 100}))
    index.observe("ns/a", None, a)
    index.observe("ns/b", None, PodUse("n1", MappingProxyType({"cpu": 50, "memory": 10})))
    assert index.by_node["n1"] == NodeUse(2, MappingProxyType({"cpu": 150, "memory": 10}))
    index.observe("ns/a", a, PodUse("n2", a.requests))  # a pod rebound elsewhere
    assert index.by_node["n1"].pods == 1
    assert index.by_node["n1"].requests["cpu"] == 50
    assert index.by_node["n2"] == NodeUse(1, MappingProxyType({"cpu": 100}))
    index.observe("ns/a", PodUse("n2", a.requests), None)
    assert "n2" not in index.by_node
    index.observe("ns/c", None, PodUse(None, MappingProxyType({"cpu": 1})))  # pending
    assert set(index.by_node) == {"n1"}


def pod_obj(node: str | None = None, nominated: str | None = None, phase: str = "Running") -> Any:
    spec: dict[str, Any] = {"containers": [c("100m")]}
    if node:
        spec["nodeName"] = node
    status: dict[str, Any] = {"phase": phase}
    if nominated:
        status["nominatedNodeName"] = nominated
    return {"metadata": {"name": "p", "namespace": "ns"}, "spec": spec, "status": status}


def test_a_pod_counts_on_its_node_or_nomination_until_it_finishes() -> None:
    assert pod_use(pod_obj("n1"), NOW).node == "n1"
    assert pod_use(pod_obj(None, "n2", "Pending"), NOW).node == "n2"
    assert pod_use(pod_obj(None, None, "Pending"), NOW).node is None
    assert pod_use(pod_obj("n1", phase="Succeeded"), NOW).node is None
    assert pod_use(pod_obj("n1"), NOW).requests == {"cpu": 100}
    with pytest.raises(ValueError, match="no spec"):
        pod_use({"metadata": {"name": "p"}}, NOW)


def test_node_facts_read_allocatable_and_survive_a_malformed_one() -> None:
    node = {"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "2", "pods": "110"}}}
    assert NodeFacts.from_node(node).allocatable == {"cpu": 2000, "pods": 110}
    node["status"] = {"allocatable": {"cpu": "lots"}}
    assert NodeFacts.from_node(node).allocatable is None
    assert NodeFacts.from_node({"metadata": {"name": "n"}}).allocatable is None


# Eight edges, the four least loaded (best scored) full for a 1-CPU pod.
EDGES = [replace(facts(f"e{i}"), allocatable=ALLOC | {"pods": 110}) for i in range(8)]
LOAD = {f"e{i}": 0.05 if i < 4 else 0.6 for i in range(8)}
FULL = {f"e{i}": NodeUse(1, MappingProxyType({"cpu": 1500})) for i in range(4)}


def crowded(usage: dict[str, NodeUse] = FULL, **kw: Any) -> Snapshot:
    return replace(world(EDGES, load=LOAD, now=NOW), usage=usage, **kw)


def big_pod() -> dict[str, Any]:
    p = pod()
    p["spec"]["containers"] = [c("1", "100Mi")]
    return p


def test_a_pod_is_pinned_only_to_nodes_with_room_for_it() -> None:
    snapshot = crowded()
    ranking, _ = evaluate(pod(), snapshot, POLICY, NOW).by_score()
    best_four = {n for _, group in ranking[:1] for n in group}
    assert best_four == set(FULL)  # without the room check, the pin would be these
    for seed in range(5):
        outcome = decide(big_pod(), snapshot, POLICY, NOW, 4, random.Random(seed))
        assert isinstance(outcome, Narrowed)
        assert set(outcome.nodes) == {"e4", "e5", "e6", "e7"}
    # A small pod still fits the full-ish nodes and gets the best ones.
    small = pod()
    small["spec"]["containers"] = [c("100m")]
    outcome = decide(small, snapshot, POLICY, NOW, 4, random.Random(0))
    assert isinstance(outcome, Narrowed)
    assert set(outcome.nodes) == set(FULL)


def test_no_room_anywhere_leaves_the_pod_to_the_scheduler_unpinned() -> None:
    everywhere = {f"e{i}": NodeUse(1, MappingProxyType({"cpu": 1500})) for i in range(8)}
    outcome = decide(big_pod(), crowded(everywhere), POLICY, NOW, 4, random.Random(0))
    assert isinstance(outcome, Skipped)
    assert outcome.code == "no-room"


def test_not_narrowed_before_the_pod_watch_has_listed() -> None:
    outcome = decide(big_pod(), crowded(pods_synced=False), POLICY, NOW, 4, random.Random(0))
    assert isinstance(outcome, Skipped)
    assert outcome.code == "not-synced"


def resized(
    spec_cpu: str, actuated: str | None, allocated: str | None, reason: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A running pod's spec and status after an in-place resize of its container."""
    cs: dict[str, Any] = {"name": "x", "resources": {}}
    if actuated is not None:
        cs["resources"] = {"requests": {"cpu": actuated}}
    if allocated is not None:
        cs["allocatedResources"] = {"cpu": allocated}
    status: dict[str, Any] = {"phase": "Running", "containerStatuses": [cs]}
    if reason is not None:
        status["conditions"] = [{"type": "PodResizePending", "status": "True", "reason": reason}]
    return {"containers": [c(spec_cpu)]}, status


@pytest.mark.parametrize(
    ("spec_cpu", "actuated", "allocated", "reason", "counted"),
    [
        ("500m", "1500m", "1500m", None, 1500),  # resized down, the kubelet not there yet
        ("1500m", "500m", "500m", None, 1500),  # resized up: the spec already counts
        ("500m", "500m", "900m", None, 900),  # allocated ahead of actuated
        ("900m", "100m", "100m", "Infeasible", 100),  # a resize the node can never take
        ("900m", "100m", "100m", "Deferred", 900),  # one it may take later holds the room
        ("500m", None, None, None, 500),  # status without numbers: the spec
    ],
)
def test_a_pod_resized_in_place_counts_as_the_scheduler_counts_it(
    spec_cpu: str, actuated: str | None, allocated: str | None, reason: str | None, counted: int
) -> None:
    """component-helpers PodRequests with UseStatusResources (InPlacePodVerticalScaling,
    GA): per container, the most of spec, actuated and allocated; an infeasible resize
    leaves the spec out."""
    spec, status = resized(spec_cpu, actuated, allocated, reason)
    assert dict(pod_requests(spec, status)) == {"cpu": counted}
    assert pod_use({"spec": {**spec, "nodeName": "n1"}, "status": status}, NOW).requests == {
        "cpu": counted
    }


def test_a_pod_level_resize_and_pod_level_hugepages_count() -> None:
    spec = {
        "containers": [c("100m", "64Mi")],
        "resources": {"requests": {"cpu": "1", "hugepages-2Mi": "4Mi"}},
    }
    assert dict(pod_requests(spec)) == {
        "cpu": 1000,
        "memory": 64 * 2**20,
        "hugepages-2Mi": 4 * 2**20,
    }
    status = {"resources": {"requests": {"cpu": "2"}}, "allocatedResources": {"cpu": "1500m"}}
    assert dict(pod_requests(spec, status))["cpu"] == 2000  # actuated 2 CPUs: still held
