"""The extender's aiohttp application: routes, and the sources and controllers that
run beside them, adapted into cleanup contexts. The sources themselves take
explicit arguments (api client, store, policy, metrics), never the app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from cloud4iot.policy.store import PolicyStore
from cloud4iot.service import plain_listener, service_routes
from extender import webhook
from extender.metrics import age_since
from extender.runtime import RUNTIME, Runtime
from extender.settings import Settings
from extender.state.snapshot import Snapshot
from extender.state.store import StateStore
from extender.tls import CertReloader, TlsFiles

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]
# /healthz (a dead background task), /readyz (webhook.readyz), /metrics: on the main
# port and, with settings.health_port, on the plain one.
HEALTH_ROUTES = service_routes(RUNTIME, readyz=webhook.readyz)


def create_app(
    settings: Settings,
    *,
    policy: PolicyStore | None = None,
    state: StateStore | None = None,
    sources: list[CleanupCtx] | None = None,
) -> web.Application:
    """Build the app. The policy is loaded here only when not given (tests pass one).

    With `settings.tls_cert`, the certificate and key (and client CA) are loaded here
    too (a bad one raises `extender.tls.TlsError`); `app[RUNTIME].tls.context` is the
    live SSLContext to serve with, and a background task reloads it when the files change.

    `sources` are cleanup contexts that keep the state current (Kubernetes watches,
    the Prometheus refresher); by default they follow the settings.
    """
    # auto_decompress off: the server never inflates a body; the handlers refuse any
    # Content-Encoding with 415 (see cloud4iot.httpjson.read_body), so a compressed body
    # costs at most its own size, bounded by client_max_size.
    app = web.Application(
        client_max_size=settings.max_body_bytes, handler_args={"auto_decompress": False}
    )
    store, clock = (state, time.time) if state else initial_state(settings)
    rt = Runtime(
        settings=settings,
        policy=policy or PolicyStore.open(settings.policy_path),
        state=store,
        clock=clock,
    )
    app[RUNTIME] = rt
    _wire_metrics(rt)

    app.router.add_post("/filter", webhook.filter_handler)
    app.router.add_post("/prioritize", webhook.prioritize_handler)
    app.router.add_post("/explain", webhook.explain_handler)
    app.add_routes(HEALTH_ROUTES)

    app.cleanup_ctx.append(_policy_reloader)
    if settings.tls_cert is not None:
        assert settings.tls_key is not None, "tls_cert without tls_key"
        rt.tls = CertReloader.open(
            TlsFiles(settings.tls_cert, settings.tls_key, settings.client_ca)
        )
        app.cleanup_ctx.append(_tls_reloader)
    if settings.health_port is not None:
        # The webhook itself is served only on the main (TLS) port.
        app.cleanup_ctx.append(
            plain_listener(RUNTIME, HEALTH_ROUTES, settings.host, settings.health_port)
        )
    if settings.admission_port is not None:
        from extender.admission.server import admission_listener, open_admission_tls

        open_admission_tls(rt)
        app.cleanup_ctx.append(admission_listener)
    for source in sources if sources is not None else default_sources(settings):
        app.cleanup_ctx.append(source)
    return app


def initial_state(settings: Settings) -> tuple[StateStore, Callable[[], float]]:
    """An empty store on wall time, or a state file's world on its own clock."""
    if settings.state_path is None:
        # Standalone (no cluster): there will never be Devices to wait for.
        standalone = not settings.cluster_configured
        # The pod watch (admission's room check) runs only beside an admission port.
        pods_synced = standalone or settings.admission_port is None
        snapshot = Snapshot(devices_synced=standalone, pods_synced=pods_synced)
        return StateStore(snapshot=snapshot), time.time
    from extender.state.statefile import load_state

    snapshot, now = load_state(settings.state_path)
    started = time.monotonic()
    # The file's timestamps stay as meaningful as when it was written: its world
    # starts at its `now` and ages in real time from there.
    return StateStore(snapshot=snapshot), lambda: now + (time.monotonic() - started)


def default_sources(settings: Settings) -> list[CleanupCtx]:
    found: list[CleanupCtx] = []
    if settings.cluster_configured:
        found.append(_kube_state)
    if settings.prometheus_url:
        found.append(_prometheus_refresher)
    return found


def _wire_metrics(rt: Runtime) -> None:
    metrics, store, policy = rt.metrics, rt.state, rt.policy
    metrics.set_policy(policy.current.policy.metadata.name, policy.current.digest)
    metrics.set_age_function("prometheus", lambda: age_since(store.snapshot.load_refreshed_at))
    for source in ("kubernetes", "prometheus"):
        metrics.source_up.labels(source).set_function(store.up(source))
    metrics.objects.labels("node").set_function(lambda: len(store.snapshot.nodes))
    metrics.objects.labels("device").set_function(lambda: len(store.snapshot.devices))


async def _policy_reloader(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    store, metrics = rt.policy, rt.metrics

    def reloaded(result: str) -> None:
        metrics.policy_reloads.labels(result).inc()
        if result == "applied":
            metrics.set_policy(store.current.policy.metadata.name, store.current.digest)

    task = rt.tasks.spawn(store.watch(rt.settings.policy_poll_interval, reloaded), "policy-reload")
    yield
    await rt.tasks.stop([task])


async def _tls_reloader(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    assert rt.tls is not None
    reloads = rt.metrics.tls_reloads
    task = rt.tasks.spawn(
        rt.tls.watch(rt.settings.tls_poll_interval, lambda r: reloads.labels(r).inc()),
        "tls-reload",
    )
    yield
    await rt.tasks.stop([task])


async def _prometheus_refresher(app: web.Application) -> AsyncIterator[None]:
    from extender.state.prometheus import refresh_load

    rt = app[RUNTIME]
    url = rt.settings.prometheus_url
    assert url
    metrics = rt.metrics
    task = rt.tasks.spawn(
        refresh_load(
            url,
            rt.state,
            rt.policy,
            report_gaps=metrics.nodes_without_metrics.set,
            report_unlabelled=metrics.series_without_node.set,
            preset=rt.settings.prometheus_preset,
        ),
        "prometheus-refresh",
    )
    yield
    await rt.tasks.stop([task])


async def _kube_state(app: web.Application) -> AsyncIterator[None]:
    """Node, Device and GatewayReport reflectors, plus the elected nearest writer and
    report keeper unless disabled."""
    from kubernetes.aio import client

    from cloud4iot.kubeclient import api_client
    from cloud4iot.reload_events import PodRef, report_refusals
    from extender.controllers.discovery import COMPONENT, DiscoveryController, discovery_reflectors
    from extender.controllers.nearest_writer import NearestWriter
    from extender.controllers.reports import ReportKeeper
    from extender.controllers.run import run_under_lease
    from extender.state.kube import cluster_reflectors, report_health

    rt = app[RUNTIME]
    settings, store, tasks = rt.settings, rt.state, rt.tasks
    api = await api_client(None if settings.in_cluster else settings.kubeconfig)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    device_changed = asyncio.Event()
    cluster = cluster_reflectors(
        core,
        custom,
        store,
        on_devices=device_changed.set,
        coordination=client.CoordinationV1Api(api),
        gateway_namespace=settings.gateway_namespace,
        # Admission's room check reads what the pods on each node request.
        pod_usage=settings.admission_port is not None,
    )
    watches = cluster.watches
    spawned = [tasks.spawn(r.run(), f"watch-{r.name}") for r in watches]
    spawned.append(tasks.spawn(report_health(store, watches), "kube-health"))
    if (pod := PodRef.from_env()) is not None:
        refusals = report_refusals(
            core, rt.policy, pod, COMPONENT, settings.policy_poll_interval, time.time
        )
        spawned.append(tasks.spawn(refusals, "policy-events"))
    if settings.leader_election:
        writer = NearestWriter(custom=custom, core=core, policy=rt.policy, store=store)
        keeper = ReportKeeper(custom=custom, store=store, reports=cluster.reports)
        # Deploy on discovery (issue 25): its own watches, outside readiness (a cluster
        # without the DeviceClass CRD still places pods).
        classes, discovered = discovery_reflectors(custom)
        spawned += [tasks.spawn(r.run(), f"watch-{r.name}") for r in (classes, discovered)]
        discovery = DiscoveryController(
            custom=custom,
            apps=client.AppsV1Api(api),
            store=store,
            reports=cluster.reports,
            classes=classes,
            discovered=discovered,
            core=core,
            policy=rt.policy,
            alive=cluster.sightings.alive_at,
        )
        leader = rt.metrics.leader
        rt.metrics.nearest_lag.set_function(writer.lag)
        rt.metrics.nearest_failing.set_function(writer.failing_writes)
        rt.metrics.nearest_undecidable.set_function(writer.failing_decisions)
        elected = run_under_lease(
            client.CoordinationV1Api(api),
            settings.lease_namespace,
            settings.lease_name,
            [lambda: writer.run(device_changed), keeper.run, discovery.run],
            on_change=lambda leading: leader.set(1 if leading else 0),
        )
        spawned.append(tasks.spawn(elected, "controllers"))
    yield
    await tasks.stop(spawned)
    await api.close()
