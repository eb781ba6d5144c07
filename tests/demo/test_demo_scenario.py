"""The main demo on the devcluster: every placement it claims really happens."""

from __future__ import annotations

import pytest
from kubernetes import client

from demo.scenario import PATIENT, run

pytestmark = pytest.mark.cluster


def test_demo_roams_offloads_onloads_and_switches_mode(devcluster, kube_api):
    lines: list[str] = []
    result = run(devcluster, say=lines.append)
    where = {s.name: s.node for s in result.steps}
    assert where["placed"] == "gw-home"  # the patient starts at home
    assert where["roamed"] == "gw-hospital"  # follows the wearable
    assert where["offloaded"] == "edge-1"  # up, but never to the cloud (confidential)
    assert where["onloaded"] == "gw-hospital"  # back down when the gateway frees up
    assert where["engine-normal"] in {"cloud-1", "cloud-2"}
    assert where["engine-intensive"] == "gw-home"  # the gateway that hears the engine
    assert any("tier cloud not allowed" in line for line in lines)
    # Each move was the rebalancer's, and its Event says why and where.
    detail = {s.name: s.detail for s in result.steps}
    assert detail["roamed"].startswith("Roaming: Roaming (rollout)")
    assert "gw-home -> gw-hospital" in detail["roamed"]
    assert detail["offloaded"].startswith("Offloading: Offloading (rollout)")
    assert "memory 95% above the limit 90%" in detail["offloaded"]
    assert detail["onloaded"].startswith("Onloading: Onloading (rollout)")
    assert "edge-1 -> gw-hospital" in detail["onloaded"]
    # The demo cleans up after itself: the shared cluster is left as it was.
    devices = client.CustomObjectsApi(kube_api).list_cluster_custom_object(
        "cloud4iot.io", "v1alpha1", "devices"
    )
    assert PATIENT not in {d["metadata"]["name"] for d in devices["items"]}
