"""The Prometheus presets on sample data shaped like each stack's node-exporter series,
evaluated by Prometheus' own PromQL engine (`promtool test rules`, Debian package).

kube-prometheus relabels the node's name into `instance`; kube-prometheus-stack leaves
`instance` as host:port and ships node_namespace_pod:kube_pod_info: to join on. The
policy's default `by (node)` queries find no node in either: one series, no label.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud4iot.policy.loader import load_policy
from extender.state.prometheus import PRESETS, parse_vector, series_without, with_preset

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_policy(ROOT / "manifests" / "policy" / "policy.yaml").policy.spec.prometheus

# 15 s scrapes; idle grows 7.5 s per 15 s on one CPU: 50 % idle, cpu load 0.5.
# 25 of 100 bytes available: memory load 0.75.
NE = 'job="node-exporter"'


def _series(stack: str) -> list[dict[str, str]]:
    if stack == "kube-prometheus":
        target = f'{NE},instance="gw-1",namespace="monitoring",pod="node-exporter-a"'
        extra: list[dict[str, str]] = []
    else:
        target = f'{NE},instance="10.0.0.7:9100",namespace="monitoring",pod="ne-x1"'
        extra = [
            {
                "series": 'node_namespace_pod:kube_pod_info:{namespace="monitoring",pod="ne-x1",node="gw-1"}',
                "values": "1+0x20",
            }
        ]
    return [
        {"series": f'node_cpu_seconds_total{{{target},cpu="0",mode="idle"}}', "values": "0+7.5x20"},
        {"series": f'node_cpu_seconds_total{{{target},cpu="0",mode="user"}}', "values": "0+3x20"},
        {"series": f"node_memory_MemAvailable_bytes{{{target}}}", "values": "25+0x20"},
        {"series": f"node_memory_MemTotal_bytes{{{target}}}", "values": "100+0x20"},
        *extra,
    ]


def _promtool(tmp_path: Path, stack: str, tests: list[dict[str, Any]]) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make system-deps` (Debian package prometheus)"
    doc = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": _series(stack), "promql_expr_test": tests}],
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("stack", sorted(PRESETS))
def test_each_preset_names_the_node_on_its_stack(tmp_path: Path, stack: str) -> None:
    spec = with_preset(SPEC, stack)
    labels = f'{{{spec.node_label}="gw-1"}}'
    _promtool(
        tmp_path,
        stack,
        [
            {
                "expr": spec.queries.cpu,
                "eval_time": "4m",
                "exp_samples": [{"labels": labels, "value": 0.5}],
            },
            {
                "expr": spec.queries.memory,
                "eval_time": "4m",
                "exp_samples": [{"labels": labels, "value": 0.75}],
            },
        ],
    )
    # The interval and timeout stay the policy's.
    assert (spec.refresh_interval, spec.timeout) == (SPEC.refresh_interval, SPEC.timeout)


@pytest.mark.parametrize("stack", sorted(PRESETS))
def test_the_plain_policy_queries_find_no_node_on_either_stack(tmp_path: Path, stack: str) -> None:
    """Why the presets exist: `by (node)` over node_* series returns one unlabelled series."""
    cpu = SPEC.queries.cpu.replace("[30s]", "[1m]")
    _promtool(
        tmp_path,
        stack,
        [{"expr": cpu, "eval_time": "4m", "exp_samples": [{"labels": "{}", "value": 0.5}]}],
    )


def test_unlabelled_series_are_counted_not_taken_for_nodes() -> None:
    result = [
        {"metric": {}, "value": [0, "0.2"]},
        {"metric": {"node": "gw-1"}, "value": [0, "0.5"]},
    ]
    assert parse_vector(result, "node") == {"gw-1": 0.5}
    assert series_without(result, "node") == 1
    assert series_without(result, "instance") == 2
