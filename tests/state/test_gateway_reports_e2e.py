"""GatewayReports on the devcluster: the elected extender keeps one per labelled gateway,
and a report of a node that is not labelled a gateway never moves a decision (issue 24,
hole 3: only gateways vote)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from cluster_helpers import create_device, device_status, report_sight
from kubernetes import client

from cloud4iot.vocabulary import GATEWAY_LABEL, TIER_LABEL
from devcluster import kube

pytestmark = pytest.mark.cluster

GROUP, VERSION, REPORTS = "cloud4iot.io", "v1alpha1", "gatewayreports"
HOLD = "cloud4iot.io/test-hold"  # a finalizer: the report outlives the keeper's delete


def reports(api: client.ApiClient) -> set[str]:
    items = client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, REPORTS)
    return {r["metadata"]["name"] for r in items["items"]}


def label(api: client.ApiClient, node: str, value: str | None) -> None:
    client.CoreV1Api(api).patch_node(node, {"metadata": {"labels": {GATEWAY_LABEL: value}}})


def test_the_elected_extender_keeps_one_report_per_labelled_gateway(
    kube_api: client.ApiClient,
) -> None:
    kube.wait_for(
        "reports of exactly the labelled gateways",
        lambda: (
            reports(kube_api) >= {"gw-home", "gw-hospital"}
            and not reports(kube_api) & {"cloud-1", "cloud-2", "edge-1"}
        ),
        30,
    )
    try:
        label(kube_api, "cloud-2", "true")
        kube.wait_for("cloud-2's report", lambda: "cloud-2" in reports(kube_api), 15)
    finally:
        label(kube_api, "cloud-2", None)
    kube.wait_for("cloud-2's report gone", lambda: "cloud-2" not in reports(kube_api), 15)
    # a report the admin makes for a node that is no gateway is deleted too
    client.CustomObjectsApi(kube_api).create_cluster_custom_object(
        GROUP,
        VERSION,
        REPORTS,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GatewayReport",
            "metadata": {"name": "edge-1"},
        },
    )
    kube.wait_for("edge-1's report gone", lambda: "edge-1" not in reports(kube_api), 15)


@pytest.fixture
def rogue(kube_api: client.ApiClient) -> Iterator[str]:
    """A node that calls itself a gateway (the tier label, which a kubelet could set on
    itself) without the admin's gateway label, and a report of it kept alive by a
    finalizer while the keeper tries to delete it."""
    name = f"gw-rogue-{uuid.uuid4().hex[:5]}"
    core, custom = client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
    core.create_node(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {TIER_LABEL: "gateway"}},
        }
    )
    custom.create_cluster_custom_object(
        GROUP,
        VERSION,
        REPORTS,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GatewayReport",
            "metadata": {"name": name, "finalizers": [HOLD]},
        },
    )
    try:
        yield name
    finally:
        custom.patch_cluster_custom_object(
            GROUP, VERSION, REPORTS, name, {"metadata": {"finalizers": None}}
        )
        core.delete_node(name)


def test_a_report_of_a_node_not_labelled_a_gateway_never_decides(
    kube_api: client.ApiClient, rogue: str
) -> None:
    device = f"patient-{uuid.uuid4().hex[:6]}"
    create_device(kube_api, device, "C0:11:22:33:44:55")
    custom = client.CustomObjectsApi(kube_api)
    try:
        report_sight(kube_api, device, "gw-home", -65)
        kube.wait_for(
            "gw-home nearest",
            lambda: (device_status(kube_api, device).get("nearest") or {}).get("node") == "gw-home",
            20,
        )
        # The rogue reports the device far stronger, every second for 10 s (the
        # decision's evidence rule would switch within a few seconds if it counted).
        for _ in range(10):
            report_sight(kube_api, device, rogue, -30)
            report_sight(kube_api, device, "gw-home", -65)
            assert device_status(kube_api, device)["nearest"]["node"] == "gw-home"
            time.sleep(1.0)
        held = custom.get_cluster_custom_object(GROUP, VERSION, REPORTS, rogue)
        assert held["status"]["sightings"][0]["rssi"] == -30  # it was there all along
        assert held["metadata"].get("deletionTimestamp")  # and the keeper deleted it
    finally:
        report_sight(kube_api, device, "gw-home", None)
        custom.delete_cluster_custom_object(GROUP, VERSION, "devices", device)
