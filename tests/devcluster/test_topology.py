"""The topology file: the default one is sane, malformed ones are refused clearly."""

from pathlib import Path

import pytest

from devcluster.topology import TIER_LABEL, TopologyError, load_topology


def test_default_topology_has_small_arm64_gateways_and_every_tier() -> None:
    nodes = load_topology()
    by_tier = {t: [n for n in nodes if n.tier == t] for t in ("gateway", "edge", "cloud")}
    assert len(by_tier["gateway"]) == 2
    assert len(by_tier["edge"]) == 1
    assert len(by_tier["cloud"]) == 2
    biggest_gateway = max(n.cpu_cores for n in by_tier["gateway"])
    assert all(n.arch == "arm64" for n in by_tier["gateway"])
    assert biggest_gateway < min(n.cpu_cores for n in by_tier["cloud"])
    assert max(n.memory_bytes for n in by_tier["gateway"]) <= 4 * 2**30


def test_node_manifest_carries_tier_arch_and_capacity() -> None:
    gateway = next(n for n in load_topology() if n.tier == "gateway")
    manifest = gateway.manifest()
    labels = manifest["metadata"]["labels"]
    assert labels[TIER_LABEL] == "gateway"
    assert labels["kubernetes.io/arch"] == "arm64"
    assert manifest["status"]["allocatable"]["cpu"] == gateway.cpu
    assert manifest["status"]["capacity"]["memory"] == gateway.memory


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("nodes: []", "non-empty list"),
        ("nodes:\n  - {name: a, tier: fog, arch: amd64, cpu: '1', memory: 1Gi}", "tier"),
        ("nodes:\n  - {name: a, tier: edge, arch: amd64, cpu: lots, memory: 1Gi}", "cpu"),
        ("nodes:\n  - {name: a, tier: edge, arch: amd64, memory: 1Gi}", "missing cpu"),
        (
            "nodes:\n  - {name: a, tier: edge, arch: amd64, cpu: '1', memory: 1Gi}\n"
            "  - {name: a, tier: edge, arch: amd64, cpu: '1', memory: 1Gi}",
            "duplicate",
        ),
    ],
)
def test_malformed_topology_is_refused_with_file_and_reason(
    tmp_path: Path, text: str, complaint: str
) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError, match=complaint) as raised:
        load_topology(path)
    assert str(path) in str(raised.value)
