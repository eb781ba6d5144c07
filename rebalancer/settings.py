"""Run-time settings of the rebalancer service (from the command line)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloud4iot.buildinfo import DEFAULT_POLICY


@dataclass(frozen=True, slots=True)
class RebalancerSettings:
    policy_path: Path = DEFAULT_POLICY
    host: str = "0.0.0.0"
    port: int = 8889
    kubeconfig: Path | None = None  # None: the pod's service account
    prometheus_url: str | None = None
    prometheus_preset: str | None = None  # extender/state/prometheus.py PRESETS
    dry_run: bool = False
    policy_poll_interval: float = 2.0
    lease_namespace: str = "kube-system"
    lease_name: str = "cloud4iot-rebalancer"
    gateway_namespace: str = "cloud4iot-gateway"  # the monitors' liveness Leases
    identity: str | None = None  # default: hostname-pid
