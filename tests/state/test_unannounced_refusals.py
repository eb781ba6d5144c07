"""A pod every node refuses for a reason no cluster event announces (the gateways'
load, a Device not registered yet) is retried by kube-scheduler and binds once the
reason is gone, instead of waiting in the unschedulable pool for its 5-minute flush.

The real kube-scheduler, extender, load simulator and Prometheus of the devcluster.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from typing import Any

import pytest
from cluster_helpers import create_device, sight
from kubernetes import client

from devcluster import kube
from extender.protocol import RETRY_PREFIX
from tests.waiting import eventually

pytestmark = pytest.mark.cluster

GATEWAYS = ("gw-home", "gw-hospital")


def gateway_pod(name: str, function: str, device: str | None = None) -> client.V1Pod:
    annotations = {"cloud4iot.io/function": function}
    if device is not None:
        annotations["cloud4iot.io/device"] = device
    return kube.model(
        client.V1Pod,
        {
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "schedulerName": "cloud4iot-scheduler",
                "nodeSelector": {"cloud4iot.io/tier": "gateway"},
                "containers": [{"name": "c", "image": "cloud4iot/anonymiser:0.1.0"}],
            },
        },
    )


def events_saying(api: client.ApiClient, namespace: str, pod: str, words: str) -> bool:
    return any(words in (e.message or "") for e in kube.pod_events(api, namespace, pod))


def verdict_codes(extender_url: str, pod: client.V1Pod) -> dict[str, str]:
    """The extender's own verdicts (its /explain) for `pod`, by node."""
    body = json.dumps(client.ApiClient().sanitize_for_serialization(pod)).encode()
    request = urllib.request.Request(f"{extender_url}/explain", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as resp:
        doc = json.load(resp)
    return {n["node"]: n["code"] for n in doc["nodes"]}


def node_of(core: client.CoreV1Api, namespace: str, pod: str) -> str | None:
    name: str | None = core.read_namespaced_pod(pod, namespace).spec.node_name
    return name


async def test_a_pod_refused_for_load_binds_once_the_gateway_frees_up(
    devcluster: Any, kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    try:
        for gw in GATEWAYS:
            devcluster.set_load(gw, cpu=0.97)
        pod = gateway_pod("busy", "anonymiser")

        def both_overloaded() -> bool:
            codes = verdict_codes(devcluster.extender_url, pod)
            return all(codes.get(gw) == "overloaded" for gw in GATEWAYS)

        # Prometheus' 30 s rate window fills with the load first.
        await eventually(both_overloaded, 120, "the extender to see both gateways loaded", 1)
        core.create_namespaced_pod(namespace, pod)
        await eventually(
            lambda: events_saying(kube_api, namespace, "busy", RETRY_PREFIX),
            120,
            "FailedScheduling with the extender's retry",
            interval=0.5,
        )
        assert node_of(core, namespace, "busy") is None
        freed = time.monotonic()
        devcluster.set_load("gw-hospital", cpu=0.05)
        # Nothing kube-scheduler watches changes now: only its retries can place the
        # pod (a parked pod would wait for the 5-minute flush).
        await eventually(
            lambda: node_of(core, namespace, "busy") == "gw-hospital",
            120,
            "the pod bound to the freed gateway",
            interval=0.5,
        )
        print(f"load dropped -> bound: {time.monotonic() - freed:.1f}s")
    finally:
        for gw in GATEWAYS:
            devcluster.clear_load(gw)


async def test_a_pod_naming_a_device_not_registered_yet_binds_once_it_is(
    devcluster: Any, kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    device = f"late-{uuid.uuid4().hex[:6]}"
    # The function's pod first (an admin applying a kustomization in any order).
    core.create_namespaced_pod(namespace, gateway_pod("early", "mhealth-consolidator", device))
    await eventually(
        lambda: events_saying(kube_api, namespace, "early", f"device {device} is not registered"),
        60,
        "FailedScheduling: the device is not registered",
        interval=0.25,
    )
    assert events_saying(kube_api, namespace, "early", RETRY_PREFIX)
    create_device(kube_api, device, "AA:BB:CC:00:21:01")
    # Registered, not heard: now the ordinary refusal (the writer's nudge wakes it).
    await eventually(
        lambda: events_saying(kube_api, namespace, "early", "does not hear the device"),
        60,
        "FailedScheduling: no gateway hears the device",
        interval=0.25,
    )
    sight(kube_api, device, "gw-home", -60)
    await eventually(
        lambda: node_of(core, namespace, "early") == "gw-home", 60, "bound to gw-home", 0.25
    )
