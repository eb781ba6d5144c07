"""A known world (gateways, edges, clouds, a wearable), pod builders and a small
RFC 6902 applier for the admission narrowing tests."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloud4iot.policy.loader import load_policy
from cloud4iot.policy.schema import PlacementPolicy
from extender.state.devices import device_facts
from extender.state.snapshot import LoadSample, NodeFacts, Snapshot

ROOT = Path(__file__).resolve().parents[2]
POLICY_PATH = ROOT / "policies" / "default.yaml"
POLICY: PlacementPolicy = load_policy(POLICY_PATH).policy
SCHEDULER = "cloud4iot-scheduler"


def node_obj(
    name: str,
    tier: str | None,
    labels: Mapping[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    unschedulable: bool = False,
) -> dict[str, Any]:
    """A Node as the apiserver sends it (only what NodeFacts reads)."""
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/arch": "amd64", **(labels or {})}
    if tier:
        all_labels["cloud4iot.io/tier"] = tier
    spec: dict[str, Any] = {}
    if taints is not None:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {"metadata": {"name": name, "labels": all_labels}, "spec": spec}


def facts(
    name: str,
    tier: str | None = "edge",
    labels: Mapping[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    unschedulable: bool = False,
) -> NodeFacts:
    return NodeFacts.from_node(node_obj(name, tier, labels, taints, unschedulable))


def world(
    nodes: list[NodeFacts],
    load: Mapping[str, float] | None = None,
    heard_by: Mapping[str, float] | None = None,
    now: float | None = None,
    *,
    nodes_synced: bool = True,
    devices_synced: bool = True,
) -> Snapshot:
    """A snapshot of `nodes`, with per-node CPU load and a wearable heard by `heard_by`
    (gateway -> RSSI), sighted a second before `now`."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 1))
    wearable = device_facts(
        {
            "metadata": {"name": "wearable"},
            "spec": {"address": "AA:BB:CC:DD:EE:01"},
            "status": {
                "sightings": [
                    {"node": g, "rssi": rssi, "lastSeen": stamp}
                    for g, rssi in (heard_by or {}).items()
                ]
            },
        }
    )
    return Snapshot(
        nodes={n.name: n for n in nodes},
        devices={"wearable": wearable},
        load={n: LoadSample(cpu=c, memory=0.2, at=now) for n, c in (load or {}).items()},
        nodes_synced=nodes_synced,
        devices_synced=devices_synced,
        load_refreshed_at=now,
    )


def pod(
    function: str | None = "anonymiser",
    device: str | None = None,
    *,
    scheduler: str | None = SCHEDULER,
    annotations: bool = True,
    **spec: Any,
) -> dict[str, Any]:
    """A Pod as the apiserver sends it at CREATE; `spec` entries are added to its spec."""
    ann = {
        k: v
        for k, v in {"cloud4iot.io/function": function, "cloud4iot.io/device": device}.items()
        if v is not None
    }
    meta: dict[str, Any] = {"name": "p", "namespace": "default"}
    if annotations:
        meta["annotations"] = ann
    full_spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}], **spec}
    if scheduler is not None:
        full_spec["schedulerName"] = scheduler
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": full_spec}


def required(*terms: dict[str, Any]) -> dict[str, Any]:
    """spec.affinity with these required nodeSelectorTerms."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    found: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        found["values"] = list(values)
    return found


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")  # RFC 6901, in this order


def apply_patch(doc: Mapping[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply RFC 6902 `add` operations (the only op the webhook emits) to a copy of `doc`.

    A parent that does not exist is an error, as in the apiserver's applier."""
    out = copy.deepcopy(dict(doc))
    for op in ops:
        assert op["op"] == "add", op
        path = op["path"]
        assert path.startswith("/"), path
        *parents, last = [_unescape(t) for t in path[1:].split("/")]
        target: Any = out
        for token in parents:
            target = target[int(token)] if isinstance(target, list) else target[token]
        value = copy.deepcopy(op["value"])
        if isinstance(target, list):
            if last == "-":
                target.append(value)
            else:
                index = int(last)
                assert 0 <= index <= len(target), path
                target.insert(index, value)
        else:
            assert isinstance(target, dict), path
            target[last] = value
    return out
