"""Run-time settings of the extender service (from the command line)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloud4iot.buildinfo import DEFAULT_POLICY

# Every write of a pinned pod (create, bind, each status update) and every watch event of it
# carries the pin: at 5,000 nodes 32 names cost the apiserver ~1.5 ms more a pod than 8
# (profiled, BENCHMARKS.md "The pin's size"), and 16 kept the throughput of 8.
DEFAULT_CANDIDATES = 16  # --candidates: nodes a narrowed pod is pinned to


@dataclass(frozen=True, slots=True)
class Settings:
    policy_path: Path = DEFAULT_POLICY
    host: str = "0.0.0.0"
    port: int = 8888
    # Cluster access: a kubeconfig path, in-cluster config, or neither (standalone:
    # full-Node requests only, no devices).
    kubeconfig: Path | None = None
    in_cluster: bool = False
    prometheus_url: str | None = None
    prometheus_preset: str | None = None  # extender/state/prometheus.py PRESETS
    # A simulate state file (nodes, devices, load) to serve from instead of a
    # cluster: a what-if replica, and the benchmarks' fixed world.
    state_path: Path | None = None
    max_body_bytes: int = 64 * 1024 * 1024  # 5,000 full Node objects fit comfortably
    policy_poll_interval: float = 2.0
    # Write status.nearest and touch gateway Nodes only while holding this Lease.
    leader_election: bool = True
    lease_namespace: str = "kube-system"
    lease_name: str = "cloud4iot-extender"
    gateway_namespace: str = "cloud4iot-gateway"  # the monitors' liveness Leases
    # HTTPS when both are set (plain HTTP otherwise, for local use); with a client CA,
    # every client must present a certificate it signed (mutual TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    tls_poll_interval: float = 10.0  # certificate reload: how often the files are re-read
    # A second, plain-HTTP listener serving only /healthz, /readyz and /metrics: for
    # kubelet probes and Prometheus, which hold no client certificate.
    health_port: int | None = None
    # Admission narrowing (extender/admission): an HTTPS listener serving only
    # /admit, for the apiserver's MutatingWebhookConfiguration. Its own certificate,
    # and no client certificate asked (the apiserver presents none by default);
    # /admit only answers with a patch, it changes nothing.
    admission_port: int | None = None
    admission_cert: Path | None = None
    admission_key: Path | None = None
    candidates: int = DEFAULT_CANDIDATES  # nodes a narrowed pod is pinned to; 0: off

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    @property
    def cluster_configured(self) -> bool:
        return self.kubeconfig is not None or self.in_cluster
