"""A real Prometheus (the Debian binary) whose series have the labels of a common stack.

The devcluster's load simulator exports node_exporter's metrics for every node with a
`node` label. Installed stacks label them otherwise (../shared/research/install.md, 6):

- kube-prometheus: job="node-exporter"; its ServiceMonitor relabels the pod's node name
  into `instance`; the operator adds the exporter pod's `namespace` and `pod`.
- kube-prometheus-stack: job="node-exporter"; `instance` stays the scraped host:port
  (relabelings: []); `namespace` and `pod` likewise.

Neither carries a `node` label. Both run kube-state-metrics (kube_pod_info, with the
pod's node) and ship the kubernetes-mixin rule node_namespace_pod:kube_pod_info:, which
joins a pod's series to its node. Here the load simulator's page is scraped with those
labels (metric_relabel_configs: `node` becomes what the stack has, then is dropped), and
kube_pod_info for one node-exporter pod per node is a static page (kube-state-metrics'
format) served from a file, scraped as job kube-state-metrics with honor_labels like the
stacks' ServiceMonitor. The recording rule is the mixin's.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

import yaml
from kubernetes import client

from devcluster import prometheus
from devcluster.processes import free_port

if TYPE_CHECKING:
    from tests.install.test_install import Install

STACKS = ("kube-prometheus", "kube-prometheus-stack")
NAMESPACE = "monitoring"

# kubernetes-mixin rules/node.libsonnet, shipped by both stacks.
NODE_RULES = {
    "groups": [
        {
            "name": "node.rules",
            "rules": [
                {
                    "record": "node_namespace_pod:kube_pod_info:",
                    "expr": "topk by (cluster, namespace, pod) (1, max by (cluster, node, "
                    'namespace, pod) (label_replace(kube_pod_info{job="kube-state-metrics",'
                    'node!=""}, "pod", "$1", "pod", "(.*)")))',
                }
            ],
        }
    ]
}


def exporter_pod(node: str) -> str:
    return f"node-exporter-{node}"


def relabel(stack: str) -> list[dict[str, object]]:
    """The node-exporter series' labels as `stack` has them, from the simulator's `node`."""
    assert stack in STACKS, stack
    rules: list[dict[str, object]] = [
        {"target_label": "namespace", "replacement": NAMESPACE},
        {
            "source_labels": ["node"],
            "regex": "(.+)",
            "target_label": "pod",
            "replacement": "node-exporter-$1",
        },
    ]
    if stack == "kube-prometheus":  # instance = the node's name
        rules.append({"source_labels": ["node"], "regex": "(.+)", "target_label": "instance"})
    rules.append({"action": "labeldrop", "regex": "node"})
    return rules


def kube_pod_info(nodes: list[str]) -> str:
    lines = ["# HELP kube_pod_info Information about pod.", "# TYPE kube_pod_info gauge"]
    for node in nodes:
        lines.append(
            f'kube_pod_info{{namespace="{NAMESPACE}",pod="{exporter_pod(node)}",'
            f'node="{node}",created_by_kind="DaemonSet",created_by_name="node-exporter"}} 1'
        )
    return "\n".join(lines) + "\n"


OPERATOR_KINDS = (("PodMonitor", "podmonitors"), ("PrometheusRule", "prometheusrules"))


def operator_crds(api: client.ApiClient) -> None:
    """The stack's monitoring.coreos.com kinds the overlay's monitoring component uses.

    A stand-in: both stacks install the Prometheus operator's CRDs with themselves; here
    they are schema-less (no operator runs: the test's Prometheus is configured by hand),
    so the apply is checked for kinds and names, not for the operator's schema.
    """
    ext = client.ApiextensionsV1Api(api)
    for kind, plural in OPERATOR_KINDS:
        body = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
        try:
            ext.create_custom_resource_definition(body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    deadline = time.monotonic() + 30
    for _, plural in OPERATOR_KINDS:
        while True:
            crd = ext.read_custom_resource_definition(f"{plural}.monitoring.coreos.com")
            conditions = (crd.status.conditions or []) if crd.status else []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            assert time.monotonic() < deadline, f"{plural} CRD not established"
            time.sleep(0.2)


def start(inst: Install, stack: str) -> str:
    """Start the stack-shaped Prometheus (a process of `inst`); its URL once it has a
    rate window of every node's series."""
    try:  # the stack's namespace (its NetworkPolicy goes there); the other stack's run made it
        client.CoreV1Api(inst.api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE))
        )
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    operator_crds(inst.api)
    nodes = sorted(n.metadata.name for n in client.CoreV1Api(inst.api).list_node().items)
    work = inst.work / f"prometheus-{stack}"
    (work / "ksm").mkdir(parents=True)
    (work / "ksm" / "metrics.txt").write_text(kube_pod_info(nodes))
    ksm_port, prom_port = free_port(), free_port()
    inst.start(
        f"kube-state-metrics-{stack}",
        [
            *(sys.executable, "-m", "http.server", str(ksm_port)),
            *("--bind", "127.0.0.1", "--directory", str(work / "ksm")),
        ],
        {},
    )
    loadsim = f"127.0.0.1:{inst.cluster.state().ports['loadsim']}"
    (work / "rules.yml").write_text(yaml.safe_dump(NODE_RULES))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "node-exporter",
                "static_configs": [{"targets": [loadsim]}],
                "metric_relabel_configs": relabel(stack),
            },
            {
                "job_name": "kube-state-metrics",
                "honor_labels": True,
                "metrics_path": "/metrics.txt",
                "static_configs": [{"targets": [f"127.0.0.1:{ksm_port}"]}],
            },
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    argv = prometheus.prometheus_argv(work / "prometheus.yml", work / "data", prom_port)
    inst.start(f"prometheus-{stack}", argv, {})
    url = f"http://127.0.0.1:{prom_port}"
    idle = 'node_cpu_seconds_total{job="node-exporter",mode="idle"}'
    checks = {  # every node's exporter series with a few samples, and the rule evaluated
        f"count(count by (pod) ({idle}))": len(nodes),
        f"min(count_over_time({idle}[1m])) >= bool 3": 1,
        "count(node_namespace_pod:kube_pod_info:)": len(nodes),
    }
    deadline = time.monotonic() + 60
    got: dict[str, float | None] = {}
    while time.monotonic() < deadline:
        got = {q: scalar(url, q) for q in checks}
        if all(got[q] == want for q, want in checks.items()):
            return url
        time.sleep(0.5)
    raise AssertionError(f"the {stack} Prometheus is not filled after 60 s: {got} != {checks}")


def scalar(url: str, promql: str) -> float | None:
    """The value of a one-series instant query (None: no series, or not up yet)."""
    query = urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=3) as resp:
            result = json.load(resp)["data"]["result"]
    except OSError:
        return None
    return float(result[0]["value"][1]) if len(result) == 1 else None
