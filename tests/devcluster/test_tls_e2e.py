"""The real kube-scheduler calling the extender over mutual TLS.

A cluster of its own (the session devcluster stays plain HTTP), started and torn
down within this module; no rebalancer, to keep it light.
"""

from __future__ import annotations

import os
import ssl
import urllib.request
from collections.abc import Iterator

import pytest
import yaml
from e2e_workloads import deployment
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from devcluster import kube
from devcluster.cluster import Devcluster
from devcluster.topology import TIER_LABEL

pytestmark = pytest.mark.cluster

CONFIDENTIAL = "mhealth-consolidator"  # tiers: gateway, edge


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devcluster]:
    cluster = Devcluster(
        f"pytest-tls-{os.getpid()}",
        state_root=tmp_path_factory.mktemp("tls-cluster"),
        with_rebalancer=False,
        tls=True,
    )
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down(keep_logs=os.environ.get("CLOUD4IOT_KEEP_LOGS") == "1")
        assert cluster.leftover_processes() == []


def filter_calls(cluster: Devcluster) -> float:
    """Successful node-name filter calls, from the plain health port's /metrics."""
    with urllib.request.urlopen(f"{cluster.extender_health_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "cloud4iot_extender_requests_total"
        and s.labels == {"verb": "filter", "mode": "nodeNames", "code": "200"}
    )


def test_scheduler_places_a_managed_pod_through_the_tls_extender(tls_cluster: Devcluster) -> None:
    # The scheduler really was configured for TLS, verifying the extender.
    config = yaml.safe_load((tls_cluster.state_dir / "kube-scheduler-config.yaml").read_text())
    (extender,) = config["extenders"]
    assert extender["urlPrefix"] == tls_cluster.extender_url
    assert extender["urlPrefix"].startswith("https://")
    files = tls_cluster.tls_files
    assert extender["tlsConfig"] == {
        "certFile": str(files.client.cert),
        "keyFile": str(files.client.key),
        "caFile": str(files.ca.cert),
    }
    # The webhook port refuses a client without a certificate: only the scheduler gets in.
    anonymous = ssl.create_default_context(cafile=str(files.ca.cert))
    request = urllib.request.Request(f"{tls_cluster.extender_url}/filter", data=b"{}")
    with pytest.raises((ssl.SSLError, ConnectionResetError, urllib.error.URLError)):
        urllib.request.urlopen(request, timeout=5, context=anonymous)

    before = filter_calls(tls_cluster)
    with kube.api_client(tls_cluster.kubeconfig) as api:
        namespace = "tls-e2e"
        kube.create_namespace(api, namespace)
        kube.create_deployment(
            api, namespace, deployment("consolidator", replicas=3, function=CONFIDENTIAL)
        )
        pods = kube.wait_pods_bound(api, namespace, "app=consolidator", 3)
        core = client.CoreV1Api(api)
        tiers = set()
        for pod in pods:
            labels = core.read_node(kube.node_of(pod)).metadata.labels or {}
            tiers.add(labels.get(TIER_LABEL))
    # Only the extender keeps a confidential function off the (larger, empty) cloud nodes.
    assert tiers <= {"gateway", "edge"}, tiers
    assert filter_calls(tls_cluster) - before >= 3
