"""A known cluster picture (nodes, a wearable, load) and pod builders for webhook tests."""

from __future__ import annotations

import time
from typing import Any

from extender.state.devices import device_facts
from extender.state.snapshot import LoadSample, NodeFacts, Snapshot

TIERS = {"gw1": "gateway", "gw2": "gateway", "edge1": "edge", "cloud1": "cloud", "cloud2": "cloud"}


def node(name: str, tier: str | None = None, arch: str = "amd64") -> dict[str, Any]:
    labels = {"kubernetes.io/arch": arch, "kubernetes.io/hostname": name}
    if tier:
        labels["cloud4iot.io/tier"] = tier
    # Shaped like what kube-scheduler sends, including the odd capitalised "Port".
    return {
        "metadata": {"name": name, "labels": labels, "uid": f"uid-{name}"},
        "spec": {},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi"},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        },
    }


NODES = [node(n, t, "arm64" if t == "gateway" else "amd64") for n, t in TIERS.items()]


def pod(
    function: str | None = None, device: str | None = None, mode: str | None = None, **extra: str
) -> dict[str, Any]:
    ann = {
        k: v
        for k, v in {
            "cloud4iot.io/function": function,
            "cloud4iot.io/device": device,
            "cloud4iot.io/mode": mode,
            **extra,
        }.items()
        if v is not None
    }
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": "u1", "annotations": ann},
        "spec": {"schedulerName": "cloud4iot-scheduler", "containers": [{"name": "c"}]},
    }


def snapshot(now: float) -> Snapshot:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 1))
    wearable = device_facts(
        {
            "metadata": {"name": "wearable"},
            "spec": {"address": "AA:BB:CC:DD:EE:01"},
            "status": {"sightings": [{"node": "gw2", "rssi": -60, "lastSeen": stamp}]},
        }
    )
    load = {n: LoadSample(cpu=0.3, memory=0.3, at=now) for n in TIERS}
    load["gw1"] = LoadSample(cpu=0.97, memory=0.3, at=now)
    return Snapshot(
        nodes={n["metadata"]["name"]: NodeFacts.from_node(n) for n in NODES},
        devices={"wearable": wearable},
        load=load,
        nodes_synced=True,
        devices_synced=True,
        load_refreshed_at=now,
    )
