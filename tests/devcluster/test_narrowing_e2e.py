"""Admission narrowing on the devcluster's real apiserver and scheduler.

The devcluster installs manifests/placement/extender/narrowing-webhook.yaml pointing at its
extender's /admit (HTTPS, the devcluster's CA): new pods of our scheduler that
name a class are pinned by `metadata.name` to the scorer's best nodes.
"""

from __future__ import annotations

import base64
import socket
import time
import urllib.request
import uuid
from typing import Any

import pytest
import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from cloud4iot.vocabulary import NARROWED_ANNOTATION
from devcluster import kube
from devcluster.cluster import NARROWING_WEBHOOK, Devcluster
from tests.devcluster.e2e_workloads import bare_pod, create_pod
from tests.rebalancer.rebalancer_e2e_helpers import Radio, until
from tests.state.cluster_helpers import create_device

pytestmark = pytest.mark.cluster

SCHEDULER = "cloud4iot-scheduler"
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
GATEWAYS = ("gw-home", "gw-hospital")


def pod(
    name: str,
    annotations: dict[str, str],
    scheduler: str = SCHEDULER,
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return bare_pod(name, annotations, scheduler=scheduler, spec=spec, cpu="50m", memory="32Mi")


def pins(admitted: dict[str, Any]) -> list[str]:
    """The nodes the required terms pin by name, in term order ([] when none)."""
    affinity = admitted["spec"].get("affinity") or {}
    required = (affinity.get("nodeAffinity") or {}).get(REQUIRED) or {}
    return [
        v
        for t in required.get("nodeSelectorTerms") or []
        for f in t.get("matchFields") or []
        if f["key"] == "metadata.name"
        for v in f["values"]
    ]


def bound_node(api: client.ApiClient, namespace: str, name: str) -> str:
    core = client.CoreV1Api(api)
    return until(
        f"pod {name} bound",
        lambda: core.read_namespaced_pod(name, namespace).spec.node_name,
        timeout=90,
    )


@pytest.fixture
def heard_device(kube_api: client.ApiClient, devcluster: Devcluster) -> Any:
    """A wearable heard strongly by gw-hospital only, kept fresh; its name."""
    name = f"narrow-{uuid.uuid4().hex[:6]}"
    octets = uuid.uuid4().bytes[:5]
    create_device(kube_api, name, "C0:" + ":".join(f"{b:02X}" for b in octets))
    radio = Radio(kube_api)
    radio.set(name, "gw-hospital", -55)
    custom = client.CustomObjectsApi(kube_api)

    def nearest() -> str | None:
        obj = custom.get_cluster_custom_object("cloud4iot.io", "v1alpha1", "devices", name)
        return ((obj.get("status") or {}).get("nearest") or {}).get("node")

    until("the device's nearest gateway", lambda: nearest() == "gw-hospital", 60)
    # The extender's device view follows the same watch; give it a moment.
    time.sleep(1.0)
    yield name
    radio.close()
    custom.delete_cluster_custom_object("cloud4iot.io", "v1alpha1", "devices", name)


def test_a_confidential_pod_is_pinned_to_the_gateway_that_hears_its_device(
    kube_api: client.ApiClient, namespace: str, heard_device: str
) -> None:
    annotations = {
        "cloud4iot.io/function": "mhealth-consolidator",
        "cloud4iot.io/device": heard_device,
    }
    admitted = create_pod(kube_api, namespace, pod("wearable", annotations))
    # Proximity required: the only node the extender keeps is the nearest gateway.
    assert pins(admitted) == ["gw-hospital"]
    assert admitted["metadata"]["annotations"][NARROWED_ANNOTATION] == "1 of 1 feasible nodes"
    assert bound_node(kube_api, namespace, "wearable") == "gw-hospital"


def test_a_pod_is_pinned_only_to_nodes_its_own_constraints_admit(
    kube_api: client.ApiClient, namespace: str
) -> None:
    # The anonymiser may use gateways and the edge; this one also selects arm64
    # (the gateways), and the existing required term stays ANDed with the pin.
    spec = {
        "nodeSelector": {"kubernetes.io/arch": "arm64"},
        "affinity": {
            "nodeAffinity": {
                REQUIRED: {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "cloud4iot.io/tier", "operator": "Exists"}]}
                    ]
                }
            }
        },
    }
    admitted = create_pod(
        kube_api, namespace, pod("anon", {"cloud4iot.io/function": "anonymiser"}, spec=spec)
    )
    pinned = pins(admitted)
    assert pinned
    assert set(pinned) <= set(GATEWAYS)
    # One term per pinned node, each keeping the pod's own expression (ANDed).
    terms = admitted["spec"]["affinity"]["nodeAffinity"][REQUIRED]["nodeSelectorTerms"]
    assert len(terms) == len(pinned)
    for term in terms:
        assert {"key": "cloud4iot.io/tier", "operator": "Exists"} in [
            {k: v for k, v in e.items() if v is not None} for e in term["matchExpressions"]
        ]
    assert bound_node(kube_api, namespace, "anon") in pinned


def test_pods_without_a_class_of_another_scheduler_or_opted_out_are_admitted_unchanged(
    kube_api: client.ApiClient, namespace: str
) -> None:
    plain = create_pod(kube_api, namespace, pod("plain", {}))
    other = create_pod(
        kube_api,
        namespace,
        pod("other", {"cloud4iot.io/function": "anonymiser"}, scheduler="default-scheduler"),
    )
    opted_out = create_pod(
        kube_api,
        namespace,
        pod("opted-out", {"cloud4iot.io/function": "anonymiser", "cloud4iot.io/narrowing": "off"}),
    )
    for admitted in (plain, other, opted_out):
        assert pins(admitted) == []
        assert NARROWED_ANNOTATION not in (admitted["metadata"].get("annotations") or {})
    assert bound_node(kube_api, namespace, "plain")


def narrowed_count(devcluster: Devcluster) -> float:
    with urllib.request.urlopen(devcluster.extender_health_url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "cloud4iot_extender_admissions_total"
                and sample.labels.get("outcome") == "narrowed"
            ):
                return float(sample.value)
    return 0.0


def test_the_webhook_counts_the_pods_it_narrowed(
    kube_api: client.ApiClient, namespace: str, devcluster: Devcluster
) -> None:
    before = narrowed_count(devcluster)
    for i in range(3):
        admitted = create_pod(
            kube_api, namespace, pod(f"n{i}", {"cloud4iot.io/function": "anonymiser"})
        )
        assert pins(admitted)
    assert narrowed_count(devcluster) == before + 3


@pytest.mark.parametrize("fault", ["refused", "silent"])
def test_pods_are_created_unpinned_when_the_webhook_cannot_answer(
    kube_api: client.ApiClient, namespace: str, devcluster: Devcluster, fault: str
) -> None:
    """failurePolicy Ignore on the real apiserver: a refused connection, or a listener
    that never answers (cut at the webhook's timeoutSeconds, 2 s), leaves the pod as
    its author wrote it; the scheduler and the extender still place it."""
    doc = yaml.safe_load(NARROWING_WEBHOOK.read_text())
    ca = base64.b64encode(devcluster.tls_files.ca.cert.read_bytes()).decode()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if fault == "silent":
            sock.listen(16)  # the kernel completes handshakes; nobody ever reads
        port = sock.getsockname()[1]
        for hook in doc["webhooks"]:
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}/admit", "caBundle": ca}
        kube.install_admission_documents(kube_api, yaml.safe_dump(doc))
        try:
            time.sleep(2)  # the apiserver picks the configuration up from its informer
            started = time.monotonic()
            admitted = create_pod(
                kube_api,
                namespace,
                pod(f"unpinned-{fault}", {"cloud4iot.io/function": "anonymiser"}),
            )
            took = time.monotonic() - started
        finally:
            devcluster.install_narrowing(kube_api)
    assert pins(admitted) == []
    assert NARROWED_ANNOTATION not in (admitted["metadata"].get("annotations") or {})
    assert took < 10
    assert bound_node(kube_api, namespace, f"unpinned-{fault}") in {
        "gw-home",
        "gw-hospital",
        "edge-1",
    }
    # Restored: new pods are pinned again (once the apiserver's informer has it).
    tries = iter(range(100))

    def pinned_again() -> list[str]:
        name = f"again-{fault}-{next(tries)}"
        return pins(
            create_pod(kube_api, namespace, pod(name, {"cloud4iot.io/function": "anonymiser"}))
        )

    assert until("the webhook back", pinned_again, timeout=30)


def test_a_pod_is_pinned_only_to_nodes_with_room_for_its_requests(
    kube_api: client.ApiClient, namespace: str
) -> None:
    """The pin counts requests against allocatable as NodeResourcesFit does: a node
    without room is left out even when the scorer ranks it, so the pod is never
    pinned only to nodes it cannot fit while others fit."""
    # gw-hospital (2 CPUs) gets a pod of 1.5 CPUs, bound by name (no scheduler).
    filler = {
        "metadata": {"name": "filler"},
        "spec": {
            "nodeName": "gw-hospital",
            "containers": [
                {
                    "name": "c",
                    "image": "registry.invalid/filler:test",
                    "resources": {"requests": {"cpu": "1500m", "memory": "64Mi"}},
                }
            ],
        },
    }
    create_pod(kube_api, namespace, filler)
    core = client.CoreV1Api(kube_api)
    until(
        "the filler running",
        lambda: core.read_namespaced_pod("filler", namespace).status.phase == "Running",
        timeout=60,
    )
    time.sleep(2.0)  # the extender's pod watch follows the same apiserver
    anonymiser = {"cloud4iot.io/function": "anonymiser"}
    # A gateway-only pod (arm64) of 1 CPU: gw-hospital has 0.5 left, gw-home has room.
    on_gateways = pod("one-cpu", anonymiser, spec={"nodeSelector": {"kubernetes.io/arch": "arm64"}})
    on_gateways["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "1"
    admitted = create_pod(kube_api, namespace, on_gateways)
    assert pins(admitted) == ["gw-home"]
    assert bound_node(kube_api, namespace, "one-cpu") == "gw-home"
    # 3 CPUs: no gateway has that much at all (2 allocatable); edge-1 (8) does.
    big = pod("three-cpus", anonymiser)
    big["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "3"
    admitted = create_pod(kube_api, namespace, big)
    assert pins(admitted) == ["edge-1"]
    assert bound_node(kube_api, namespace, "three-cpus") == "edge-1"


def test_a_pod_resized_in_place_holds_its_room_for_the_scheduler_and_the_pin(
    kube_api: client.ApiClient, namespace: str
) -> None:
    """A running pod resized down in its spec (1.5 -> 0.5 CPU) whose kubelet has not done
    it yet (status: 1.5 CPU actuated and allocated) still holds 1.5 CPUs: the real
    kube-scheduler refuses 1 more CPU on that node, and the pin leaves the node out too
    (it counted the spec alone and pinned onto a node with no room)."""
    core = client.CoreV1Api(kube_api)
    filler = bare_pod("resized", {}, scheduler="default-scheduler", cpu="500m")
    filler["spec"]["nodeName"] = "gw-hospital"
    create_pod(kube_api, namespace, filler)
    until(
        "the resized pod running",
        lambda: core.read_namespaced_pod("resized", namespace).status.phase == "Running",
        timeout=60,
    )
    # What the kubelet reports while a resize down is in progress (kwok reports nothing).
    core.patch_namespaced_pod_status(
        "resized",
        namespace,
        {
            "status": {
                "containerStatuses": [
                    {
                        "name": "function",
                        "image": "registry.invalid/cloud4iot/function:test",
                        "imageID": "",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {}},
                        "resources": {"requests": {"cpu": "1500m", "memory": "64Mi"}},
                        "allocatedResources": {"cpu": "1500m", "memory": "64Mi"},
                    }
                ]
            }
        },
    )
    # The real scheduler's view: 1 CPU does not fit beside 1.5 on the 2-CPU gateway.
    probe = bare_pod("probe", {}, scheduler="default-scheduler", cpu="1")
    probe["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "gw-hospital"}
    create_pod(kube_api, namespace, probe)

    def refused() -> bool:
        events = core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=probe,reason=FailedScheduling"
        ).items
        return any("Insufficient cpu" in (e.message or "") for e in events)

    until("the scheduler refusing the probe for cpu", refused, timeout=30)
    time.sleep(2.0)  # the extender's pod watch follows the same apiserver
    anonymiser = {"cloud4iot.io/function": "anonymiser"}
    on_gateways = pod("one-cpu", anonymiser, spec={"nodeSelector": {"kubernetes.io/arch": "arm64"}})
    on_gateways["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "1"
    assert pins(create_pod(kube_api, namespace, on_gateways)) == ["gw-home"]
