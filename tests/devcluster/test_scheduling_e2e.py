"""The real kube-scheduler with our extender, on kwok nodes."""

from __future__ import annotations

import time
import urllib.request

import pytest
from e2e_workloads import deployment
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from devcluster import kube
from devcluster.cluster import Devcluster
from devcluster.topology import TIER_LABEL

pytestmark = pytest.mark.cluster

CONFIDENTIAL = "mhealth-consolidator"  # tiers: gateway, edge
ALLOWED_TIERS = {"gateway", "edge"}


def tiers_of(api: client.ApiClient, pods: list[client.V1Pod]) -> dict[str, str]:
    """pod name -> tier of the node it is bound to."""
    core = client.CoreV1Api(api)
    out = {}
    for pod in pods:
        node = core.read_node(kube.node_of(pod))
        labels = (node.metadata.labels if node.metadata else None) or {}
        out[pod.metadata.name if pod.metadata else ""] = labels.get(TIER_LABEL, "")
    return out


def scheduling_failures(api: client.ApiClient, namespace: str, pod: client.V1Pod) -> list[str]:
    name = pod.metadata.name if pod.metadata else ""
    return [
        e.message or ""
        for e in kube.pod_events(api, namespace, name)
        if e.reason == "FailedScheduling"
    ]


def extender_requests(devcluster: Devcluster) -> dict[tuple[str, str, str], float]:
    """cloud4iot_extender_requests_total by (verb, mode, code)."""
    with urllib.request.urlopen(f"{devcluster.extender_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "cloud4iot_extender_requests_total":
                counts[(s.labels["verb"], s.labels["mode"], s.labels["code"])] = s.value
    return counts


def test_confidential_deployment_lands_only_on_allowed_tiers(
    kube_api: client.ApiClient, namespace: str
) -> None:
    # Six replicas: left to resource spreading alone, some would go to the
    # large, empty cloud nodes.
    kube.create_deployment(
        kube_api, namespace, deployment("consolidator", replicas=6, function=CONFIDENTIAL)
    )
    pods = kube.wait_pods_bound(kube_api, namespace, "app=consolidator", 6)
    tiers = tiers_of(kube_api, pods)
    assert len(tiers) == 6
    assert set(tiers.values()) <= ALLOWED_TIERS, tiers


def test_refused_nodes_show_our_filter_reasons_in_pod_events(
    kube_api: client.ApiClient, namespace: str
) -> None:
    # Pinned to the gateways by a nodeSelector, a confidential function built
    # for amd64 only has no node left: the in-tree filters drop edge and cloud,
    # we drop both (arm64) gateways. (Pinned to the cloud, kube-scheduler itself
    # would refuse every node: the tier-affinity admission policy gives
    # confidential pods a node affinity on their tiers; test_tier_affinity_e2e.)
    kube.create_deployment(
        kube_api,
        namespace,
        deployment(
            "pinned",
            function=CONFIDENTIAL,
            node_selector={TIER_LABEL: "gateway"},
            annotations={"cloud4iot.io/archs": "amd64"},
        ),
    )
    pod = kube.wait_for(
        "the pod to exist", lambda: kube.pods_of(kube_api, namespace, "app=pinned") or None
    )[0]

    def our_reasons() -> list[str] | None:
        found = [
            m for m in scheduling_failures(kube_api, namespace, pod) if "no image for arm64" in m
        ]
        return found or None

    messages = kube.wait_for("a FailedScheduling event with our reason", our_reasons, 60)
    # Both gateways are named in the summary kube-scheduler writes.
    assert "2 no image for arm64" in messages[-1], messages[-1]
    current = kube.pods_of(kube_api, namespace, "app=pinned")
    assert not any(kube.is_bound(p) for p in current)


def test_pod_without_a_class_is_placed_normally(kube_api: client.ApiClient, namespace: str) -> None:
    kube.create_deployment(kube_api, namespace, deployment("plain", replicas=3))
    kube.create_deployment(
        kube_api, namespace, deployment("default-sched", scheduler="default-scheduler")
    )
    plain = kube.wait_pods_bound(kube_api, namespace, "app=plain", 3)
    default = kube.wait_pods_bound(kube_api, namespace, "app=default-sched", 1)
    assert all(p.spec and p.spec.scheduler_name == "cloud4iot-scheduler" for p in plain)
    assert kube.node_of(default[0])
    # No class: nothing was refused, so no FailedScheduling at all.
    assert all(scheduling_failures(kube_api, namespace, p) == [] for p in plain)


def test_extender_is_called_with_node_names_only(
    devcluster: Devcluster, kube_api: client.ApiClient, namespace: str
) -> None:
    before = extender_requests(devcluster)
    kube.create_deployment(
        kube_api, namespace, deployment("cached", replicas=2, function=CONFIDENTIAL)
    )
    kube.wait_pods_bound(kube_api, namespace, "app=cached", 2)
    after = extender_requests(devcluster)
    filter_calls = after.get(("filter", "nodeNames", "200"), 0) - before.get(
        ("filter", "nodeNames", "200"), 0
    )
    assert filter_calls >= 2
    # nodeCacheCapable: true means full Node objects are never sent.
    assert not any(mode == "nodes" for (_, mode, _) in after), after


def test_pods_wait_while_the_extender_is_down_and_land_when_it_is_back(
    devcluster: Devcluster, kube_api: client.ApiClient, namespace: str
) -> None:
    devcluster.stop_extender()
    try:
        assert devcluster.status()["extender"] is False
        kube.create_deployment(
            kube_api, namespace, deployment("patient", replicas=2, function=CONFIDENTIAL)
        )
        pods = kube.wait_for(
            "both pods to exist",
            lambda: (p := kube.pods_of(kube_api, namespace, "app=patient")) and len(p) == 2 and p,
        )
        # ignorable: false, so the scheduler reports the failed call and
        # retries instead of placing the pods without the policy.
        failures = kube.wait_for(
            "the scheduler to report the unreachable extender",
            lambda: [m for p in pods for m in scheduling_failures(kube_api, namespace, p)],
            30,
        )
        assert any(f"{devcluster.extender_url}/filter" in m for m in failures), failures
        time.sleep(5)
        assert not any(kube.is_bound(p) for p in kube.pods_of(kube_api, namespace, "app=patient"))
    finally:
        devcluster.start_extender()
    landed = kube.wait_pods_bound(kube_api, namespace, "app=patient", 2, timeout_s=90)
    assert set(tiers_of(kube_api, landed).values()) <= ALLOWED_TIERS
