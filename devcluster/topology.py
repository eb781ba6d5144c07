"""The devcluster's fake nodes: read from a topology file, turned into Node objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from kubernetes.utils.quantity import parse_quantity as _parse_quantity

from cloud4iot.vocabulary import GATEWAY_LABEL, TIER_LABEL

TIERS = ("gateway", "edge", "cloud")
DEFAULT_TOPOLOGY = Path(__file__).with_name("topology.yaml")


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity ("500m", "2Gi") as a Decimal; ValueError if malformed."""
    result: Decimal = _parse_quantity(value)  # type: ignore[no-untyped-call]
    return result


class TopologyError(ValueError):
    """The topology file is malformed; the message names the file and the node."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    tier: str
    arch: str
    cpu: str
    memory: str
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def cpu_cores(self) -> float:
        return float(parse_quantity(self.cpu))

    @property
    def memory_bytes(self) -> int:
        return int(parse_quantity(self.memory))

    def manifest(self) -> dict[str, Any]:
        """A v1 Node that kwok (running with --manage-all-nodes) keeps Ready."""
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods)}
        # The admin's gateway label goes with the gateway tier: its sightings count
        # (GatewayReport, docs/gateway-writes.md).
        gateway = {GATEWAY_LABEL: "true"} if self.tier == "gateway" else {}
        labels = {
            **gateway,
            **self.labels,
            TIER_LABEL: self.tier,
            "kubernetes.io/arch": self.arch,
            "kubernetes.io/os": "linux",
            "kubernetes.io/hostname": self.name,
            "type": "kwok",
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
            },
            "spec": {},
            "status": {"capacity": capacity, "allocatable": capacity},
        }


def load_topology(path: Path = DEFAULT_TOPOLOGY) -> list[NodeSpec]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise TopologyError(f"{path}: {err}") from err
    entries = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise TopologyError(f"{path}: expected a non-empty list under 'nodes'")
    nodes = [_parse_node(path, i, entry) for i, entry in enumerate(entries)]
    names = [n.name for n in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TopologyError(f"{path}: duplicate node names {duplicates}")
    return nodes


def _parse_node(path: Path, index: int, entry: object) -> NodeSpec:
    where = f"{path}: nodes[{index}]"
    if not isinstance(entry, dict):
        raise TopologyError(f"{where}: expected a mapping")
    missing = [k for k in ("name", "tier", "arch", "cpu", "memory") if k not in entry]
    if missing:
        raise TopologyError(f"{where}: missing {', '.join(missing)}")
    where = f"{path}: node {entry['name']!r}"
    if entry["tier"] not in TIERS:
        raise TopologyError(f"{where}: tier must be one of {', '.join(TIERS)}")
    for key in ("cpu", "memory"):
        try:
            if parse_quantity(str(entry[key])) <= Decimal(0):
                raise ValueError("must be positive")
        except ValueError as err:
            raise TopologyError(f"{where}: {key} {entry[key]!r}: {err}") from err
    labels = entry.get("labels") or {}
    if not isinstance(labels, dict):
        raise TopologyError(f"{where}: labels must be a mapping")
    return NodeSpec(
        name=str(entry["name"]),
        tier=str(entry["tier"]),
        arch=str(entry["arch"]),
        cpu=str(entry["cpu"]),
        memory=str(entry["memory"]),
        pods=int(entry.get("pods", 110)),
        labels={str(k): str(v) for k, v in labels.items()},
    )
