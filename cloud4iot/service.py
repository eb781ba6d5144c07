"""What every service process of ours shares: its common command-line flags, logging,
the latency buckets of its histograms and the /healthz and /metrics answers. The one
loop that re-checks a file is `cloud4iot.filewatch`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cloud4iot.buildinfo import DEFAULT_POLICY, version_line
from cloud4iot.logs import configure, log_flags
from cloud4iot.tasks import Supervisor

log = logging.getLogger(__name__)

# Seconds; from half a millisecond (a cached verdict) to 5 s (a full plan of thousands of pods).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def service_flags(
    p: argparse.ArgumentParser, port: int, cluster_required: bool, prometheus_help: str
) -> None:
    """The flags both services share: policy, address, cluster access, Prometheus."""
    version_flag(p)
    policy_flag(p)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=port)
    cluster = p.add_mutually_exclusive_group(required=cluster_required)
    cluster.add_argument("--kubeconfig", type=Path, help="watch this cluster")
    cluster.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    p.add_argument("--prometheus-url", help=prometheus_help)
    p.add_argument(
        "--prometheus-preset",
        choices=["kube-prometheus", "kube-prometheus-stack"],
        help="the node label and load queries for this Prometheus stack, instead of the "
        "policy's spec.prometheus.nodeLabel and queries",
    )
    p.add_argument("--policy-poll-interval", type=float, default=2.0)
    log_flags(p)


def version_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action="version", version=version_line(p.prog))


def policy_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy",
        type=Path,
        default=DEFAULT_POLICY,
        help="PlacementPolicy file (default: the policy shipped in the package); "
        "a missing or invalid file stops the command",
    )


def lease_flags(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument(
        "--lease-namespace",
        help="namespace of the leader-election Lease (default: the pod's namespace, "
        "env POD_NAMESPACE from the Downward API; kube-system outside a pod)",
    )
    p.add_argument("--lease-name", default=name)


def configure_logging(level: str, fmt: str = "text") -> None:
    configure(level, fmt)


def healthz_response(tasks: Supervisor) -> web.Response:
    """ "ok", or 503 naming the background tasks that ended (the kubelet restarts us)."""
    why = tasks.why_unhealthy()
    return web.Response(text=why or "ok", status=503 if why else 200)


def metrics_response(registry: CollectorRegistry) -> web.Response:
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
