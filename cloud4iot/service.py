"""What every service process of ours shares (the extender, the rebalancer, the gateway
monitor): its common command-line flags, logging, the latency buckets of its
histograms, and the HTTP shell: each process keeps one Runtime under one AppKey, and
`service_routes` answers /healthz, /readyz and /metrics from it; `plain_listener`
serves the same routes on a plain-HTTP port with the same Runtime. The one loop that
re-checks a file is `cloud4iot.filewatch`."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cloud4iot.buildinfo import DEFAULT_POLICY, version_line
from cloud4iot.logs import configure, log_flags
from cloud4iot.tasks import Supervisor

log = logging.getLogger(__name__)

# Seconds; from half a millisecond (a cached verdict) to 5 s (a full plan of thousands of pods).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def service_flags(
    p: argparse.ArgumentParser,
    port: int,
    cluster_required: bool,
    prometheus_help: str,
    debug_adds: str = "",
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
    log_flags(p, debug_adds=debug_adds)


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
    p.add_argument(
        "--gateway-namespace",
        default=os.environ.get("GATEWAY_NAMESPACE") or "cloud4iot-gateway",
        help="namespace of the gateway monitors' liveness Leases (env GATEWAY_NAMESPACE;"
        " '' = do not watch them: report entries then age on their own lastSeen)",
    )


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


# --- the HTTP shell ----------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


class _Scraped(Protocol):
    @property
    def registry(self) -> CollectorRegistry: ...


class ServiceRuntime(Protocol):
    """What the shared handlers read from a process's Runtime."""

    @property
    def tasks(self) -> Supervisor: ...

    @property
    def metrics(self) -> _Scraped: ...


R = TypeVar("R", bound=ServiceRuntime)


def service_routes(
    key: web.AppKey[R],
    *,
    healthz: Handler | None = None,
    readyz: Handler | None = None,
    before_scrape: Callable[[R], None] | None = None,
) -> list[web.RouteDef]:
    """/healthz (by default `healthz_response` of the Runtime's tasks), /readyz when the
    process has one, and /metrics (its registry, after `before_scrape` brings gauges
    up to date), each reading the Runtime under `key`."""

    async def tasks_healthz(request: web.Request) -> web.Response:
        return healthz_response(request.app[key].tasks)

    async def metrics(request: web.Request) -> web.Response:
        rt = request.app[key]
        if before_scrape is not None:
            before_scrape(rt)
        return metrics_response(rt.metrics.registry)

    routes = [web.get("/healthz", healthz or tasks_healthz)]
    if readyz is not None:
        routes.append(web.get("/readyz", readyz))
    routes.append(web.get("/metrics", metrics))
    return routes


def plain_listener(
    key: web.AppKey[R], routes: Sequence[web.RouteDef], host: str, port: int
) -> CleanupCtx:
    """A cleanup context serving `routes`, and nothing else, over plain HTTP on
    host:port from a sub-app that holds the parent's Runtime (the same object, not a
    copy): the kubelet's probes and Prometheus present no client certificate."""

    async def listener(parent: web.Application) -> AsyncIterator[None]:
        app = web.Application()
        app[key] = parent[key]
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()  # a busy port: nothing left running behind the error
            raise
        yield
        await runner.cleanup()

    return listener
