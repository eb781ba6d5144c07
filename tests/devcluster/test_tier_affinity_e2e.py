"""The tier-affinity MutatingAdmissionPolicy on the devcluster's real apiserver and scheduler.

The devcluster installs it at `up`, rendered from its policy (default.yaml:
mhealth-consolidator and anonymiser may use gateway and edge only). It also installs
the admission-narrowing webhook (test_narrowing_e2e); the pods here opt out of it
(`cloud4iot.io/narrowing: "off"`) so that what they show is this policy's doing alone.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from devcluster import kube
from devcluster.cluster import Devcluster
from devcluster.topology import TIER_LABEL
from tests.devcluster.e2e_workloads import bare_pod, create_pod

pytestmark = pytest.mark.cluster

SCHEDULER = "cloud4iot-scheduler"
CONFIDENTIAL = "mhealth-consolidator"
TIER_TERM = {"key": TIER_LABEL, "operator": "In", "values": ["gateway", "edge"]}
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
NOT_CLOUD = ("gw-home", "gw-hospital", "edge-1")


def pod(
    name: str,
    function: str | None = None,
    scheduler: str = SCHEDULER,
    affinity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    annotations = {"cloud4iot.io/narrowing": "off"}
    if function:
        annotations["cloud4iot.io/function"] = function
    spec = {"affinity": affinity} if affinity is not None else None
    return bare_pod(name, annotations, scheduler=scheduler, spec=spec)


def required_terms(admitted: dict[str, Any]) -> list[dict[str, Any]] | None:
    affinity = admitted["spec"].get("affinity") or {}
    required = (affinity.get("nodeAffinity") or {}).get(REQUIRED)
    return None if required is None else list(required["nodeSelectorTerms"])


def test_a_confidential_pod_without_affinity_gets_the_tier_term(
    kube_api: client.ApiClient, namespace: str
) -> None:
    admitted = create_pod(kube_api, namespace, pod("c", CONFIDENTIAL))
    assert required_terms(admitted) == [{"matchExpressions": [TIER_TERM]}]
    # The anonymiser may not use the cloud either: same restriction.
    anonymiser = create_pod(kube_api, namespace, pod("a", "anonymiser"))
    assert required_terms(anonymiser) == [{"matchExpressions": [TIER_TERM]}]
    # And the scheduler honours it.
    bound = kube.wait_for(
        "the pod to be bound",
        lambda: kube.node_of(client.CoreV1Api(kube_api).read_namespaced_pod("c", namespace)),
    )
    assert bound in NOT_CLOUD


def test_every_existing_required_term_gets_the_expression(
    kube_api: client.ApiClient, namespace: str
) -> None:
    # Terms are ORed: the tier must be ANDed into each, or the second would
    # let the pod onto a cloud node (the scheduler then finds no node: fine).
    arch = {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
    by_name = {"key": "metadata.name", "operator": "In", "values": ["cloud-1"]}
    preferred = [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}}
    ]
    affinity = {
        "nodeAffinity": {
            REQUIRED: {
                "nodeSelectorTerms": [{"matchExpressions": [arch]}, {"matchFields": [by_name]}]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": preferred,
        }
    }
    admitted = create_pod(kube_api, namespace, pod("two", CONFIDENTIAL, affinity=affinity))
    assert required_terms(admitted) == [
        {"matchExpressions": [arch, TIER_TERM]},
        {"matchFields": [by_name], "matchExpressions": [TIER_TERM]},
    ]
    assert (
        admitted["spec"]["affinity"]["nodeAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        == preferred
    )


@pytest.mark.parametrize(
    "affinity",
    [
        {"podAntiAffinity": {}},  # no nodeAffinity yet
        {"nodeAffinity": {}},  # no required part yet
    ],
    ids=["other-affinity", "empty-node-affinity"],
)
def test_missing_levels_are_added_without_replacing_what_is_there(
    kube_api: client.ApiClient, namespace: str, affinity: dict[str, Any]
) -> None:
    admitted = create_pod(kube_api, namespace, pod("p", CONFIDENTIAL, affinity=affinity))
    assert required_terms(admitted) == [{"matchExpressions": [TIER_TERM]}]


@pytest.mark.parametrize(
    ("function", "scheduler"),
    [
        ("engine-diagnostic", SCHEDULER),  # every tier allowed: nothing to add
        (None, SCHEDULER),  # unmanaged
        ("no-such-class", SCHEDULER),  # the extender refuses it everywhere
        (CONFIDENTIAL, "default-scheduler"),  # not ours
    ],
    ids=["all-tiers-class", "no-class", "unknown-class", "other-scheduler"],
)
def test_other_pods_are_untouched(
    kube_api: client.ApiClient, namespace: str, function: str | None, scheduler: str
) -> None:
    admitted = create_pod(kube_api, namespace, pod("u", function, scheduler))
    assert admitted["spec"].get("affinity") is None


def test_it_is_idempotent(
    devcluster: Devcluster, kube_api: client.ApiClient, namespace: str
) -> None:
    first = create_pod(kube_api, namespace, pod("first", CONFIDENTIAL))
    # A spec copied from an admitted pod (a controller re-creating it) gains nothing.
    again = create_pod(
        kube_api, namespace, pod("copy", CONFIDENTIAL, affinity=first["spec"]["affinity"])
    )
    assert required_terms(again) == [{"matchExpressions": [TIER_TERM]}]
    # A term already narrower than the class (gateway only) is left as it is.
    gateway_only = {"key": TIER_LABEL, "operator": "In", "values": ["gateway"]}
    narrow = {
        "nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": [gateway_only]}]}}
    }
    assert required_terms(
        create_pod(kube_api, namespace, pod("narrow", CONFIDENTIAL, affinity=narrow))
    ) == [{"matchExpressions": [gateway_only]}]
    # Re-installing the policy (apply after a re-render) replaces it: still one term.
    for _ in range(2):
        installed = devcluster.install_tier_affinity(kube_api)
    assert installed == [
        "MutatingAdmissionPolicy/cloud4iot-tier-affinity",
        "MutatingAdmissionPolicyBinding/cloud4iot-tier-affinity",
    ]
    after = create_pod(kube_api, namespace, pod("after", CONFIDENTIAL))
    assert required_terms(after) == [{"matchExpressions": [TIER_TERM]}]


@contextmanager
def cordoned(api: client.ApiClient, nodes: tuple[str, ...]) -> Iterator[None]:
    core = client.CoreV1Api(api)
    for node in nodes:
        core.patch_node(node, {"spec": {"unschedulable": True}})
    try:
        yield
    finally:
        for node in nodes:
            core.patch_node(node, {"spec": {"unschedulable": False}})


def extender_counters(devcluster: Devcluster) -> dict[str, float]:
    """Filter calls and per-node decisions by code, from the extender's /metrics."""
    with urllib.request.urlopen(f"{devcluster.extender_health_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "cloud4iot_extender_decisions_total":
                out[s.labels["code"]] = out.get(s.labels["code"], 0.0) + s.value
            elif s.name == "cloud4iot_extender_requests_total" and s.labels["verb"] == "filter":
                out["filter_calls"] = out.get("filter_calls", 0.0) + s.value
    return out


def wait_no_pending_pods(api: client.ApiClient) -> None:
    """The extender's counters are cluster-wide: wait until no pod of our scheduler
    (another test's, its namespace being deleted) is still being retried."""
    core = client.CoreV1Api(api)
    selector = f"spec.schedulerName={SCHEDULER},spec.nodeName="
    kube.wait_for(
        "no pending pod of our scheduler",
        lambda: not core.list_pod_for_all_namespaces(field_selector=selector).items,
        90,
    )


def test_with_only_cloud_nodes_available_go_refuses_them_before_the_extender(
    devcluster: Devcluster, kube_api: client.ApiClient, namespace: str
) -> None:
    wait_no_pending_pods(kube_api)
    before = extender_counters(devcluster)
    with cordoned(kube_api, NOT_CLOUD):
        create_pod(kube_api, namespace, pod("stuck", CONFIDENTIAL))

        def failed_scheduling() -> list[str] | None:
            found = [
                e.message or ""
                for e in kube.pod_events(kube_api, namespace, "stuck")
                if e.reason == "FailedScheduling"
            ]
            return found or None

        messages = kube.wait_for("a FailedScheduling event", failed_scheduling, 60)
        after = extender_counters(devcluster)
    # Both cloud nodes refused by kube-scheduler's NodeAffinity filter (in Go),
    # the other three cordoned: no node was left to send to the extender.
    assert "2 node(s) didn't match Pod's node affinity/selector" in messages[-1], messages
    assert "3 node(s) were unschedulable" in messages[-1], messages
    assert "tier cloud not allowed" not in messages[-1]
    assert after.get("filter_calls", 0) == before.get("filter_calls", 0)
    assert after.get("tier_not_allowed", 0) == before.get("tier_not_allowed", 0)


def test_the_extender_no_longer_receives_cloud_nodes_for_a_confidential_pod(
    devcluster: Devcluster, kube_api: client.ApiClient, namespace: str
) -> None:
    """Per filter call the extender decides once per node it was sent: 3 for a
    confidential pod (gateways and edge), 5 for an every-tier class."""

    def per_call(name: str, function: str) -> tuple[float, dict[str, float]]:
        wait_no_pending_pods(kube_api)
        before = extender_counters(devcluster)
        create_pod(kube_api, namespace, pod(name, function))
        kube.wait_for(
            f"{name} to be bound",
            lambda: kube.node_of(client.CoreV1Api(kube_api).read_namespaced_pod(name, namespace)),
        )
        after = extender_counters(devcluster)
        delta = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k)}
        calls = delta.pop("filter_calls")
        assert calls >= 1
        return sum(delta.values()) / calls, delta

    nodes, codes = per_call("confidential", CONFIDENTIAL)
    assert nodes == len(NOT_CLOUD), codes
    assert "tier_not_allowed" not in codes, codes
    nodes, codes = per_call("everywhere", "engine-diagnostic")
    assert nodes == 5, codes
