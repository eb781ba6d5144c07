"""The rebalancer service (`cloud4iot-rebalancer`): its own process, Deployment and
Lease, so the webhook's event loop never carries its work.

It feeds the same Snapshot as the extender (Nodes, Devices, Prometheus load)
from the same state library, watches our scheduler's pods and their owners, and
runs the rebalancer only while it holds its Lease. /healthz fails when a
background task died; /readyz until every cache has listed once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from cloud4iot.httpjson import json_response
from cloud4iot.policy.store import PolicyStore
from cloud4iot.service import service_routes
from cloud4iot.tasks import Supervisor
from cloud4iot.vocabulary import SCHEDULER_NAME
from extender.state.kube import Reflector, namespaced_name
from extender.state.snapshot import Snapshot
from extender.state.store import StateStore
from rebalancer.actor import Rebalancer
from rebalancer.evictor import COMPONENT
from rebalancer.metrics import RebalancerMetrics
from rebalancer.settings import RebalancerSettings
from rebalancer.workloads import DeploymentRecord, PodRecord, replicaset_owner


@dataclass(slots=True)
class Runtime:
    settings: RebalancerSettings
    policy: PolicyStore
    store: StateStore
    metrics: RebalancerMetrics
    tasks: Supervisor
    rebalancer: Rebalancer | None = None
    reflectors: tuple[Any, ...] = ()


RUNTIME = web.AppKey("runtime", Runtime)


def create_rebalancer_app(
    settings: RebalancerSettings, *, policy: PolicyStore | None = None
) -> web.Application:
    app = web.Application()
    rt = Runtime(
        settings=settings,
        policy=policy or PolicyStore.open(settings.policy_path),
        store=StateStore(snapshot=Snapshot()),
        metrics=RebalancerMetrics(),
        tasks=Supervisor(),
    )
    app[RUNTIME] = rt
    app.add_routes(service_routes(RUNTIME, readyz=_readyz))
    app.cleanup_ctx.append(_policy_reloader)
    if settings.prometheus_url:
        app.cleanup_ctx.append(_prometheus_refresher)
    app.cleanup_ctx.append(_cluster)
    return app


async def _policy_reloader(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]

    def reloaded(result: str) -> None:
        if result == "applied" and rt.rebalancer is not None:
            rt.rebalancer.wake.set()  # the digest changed: a full pass

    task = rt.tasks.spawn(rt.policy.watch(rt.settings.policy_poll_interval, reloaded), "policy")
    yield
    await rt.tasks.stop([task])


async def _prometheus_refresher(app: web.Application) -> AsyncIterator[None]:
    from extender.state.prometheus import refresh_load

    rt = app[RUNTIME]
    assert rt.settings.prometheus_url
    task = rt.tasks.spawn(
        refresh_load(
            rt.settings.prometheus_url,
            rt.store,
            rt.policy,
            preset=rt.settings.prometheus_preset,
        ),
        "prometheus-refresh",
    )
    yield
    await rt.tasks.stop([task])


async def _cluster(app: web.Application) -> AsyncIterator[None]:
    from kubernetes.aio import client

    from cloud4iot.kubeclient import api_client
    from cloud4iot.reload_events import PodRef, report_refusals
    from extender.controllers.election import default_identity
    from extender.controllers.run import run_under_lease
    from extender.state.kube import cluster_reflectors, report_health

    rt = app[RUNTIME]
    settings = rt.settings
    api = await api_client(settings.kubeconfig)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    rebalancer = Rebalancer.create(
        core,
        apps,
        rt.policy,
        rt.store,
        rt.metrics,
        dry_run=settings.dry_run,
        identity=settings.identity or default_identity(),  # Events name the replica that acted
    )
    cluster = cluster_reflectors(
        core,
        client.CustomObjectsApi(api),
        rt.store,
        observe_devices=rebalancer.observe_device,
        coordination=client.CoordinationV1Api(api),
        gateway_namespace=settings.gateway_namespace,
    )
    pods, replicasets, deployments = workload_reflectors(
        core,
        apps,
        rebalancer.observe_pod,
        rebalancer.observe_replicaset,
        rebalancer.observe_deployment,
    )
    reflectors = (*cluster.watches, pods, replicasets, deployments)
    rebalancer.synced = lambda: all(r.synced for r in reflectors)
    rt.rebalancer, rt.reflectors = rebalancer, reflectors
    rt.metrics.pods.set_function(lambda: len(rebalancer.index.pods))
    for source in ("kubernetes", "prometheus"):
        rt.metrics.source_up.labels(source).set_function(rt.store.up(source))
    spawned = [rt.tasks.spawn(r.run(), f"watch-{r.name}") for r in reflectors]
    spawned.append(rt.tasks.spawn(report_health(rt.store, reflectors), "kube-health"))
    if (pod := PodRef.from_env()) is not None:
        refusals = report_refusals(
            core, rt.policy, pod, COMPONENT, settings.policy_poll_interval, time.time
        )
        spawned.append(rt.tasks.spawn(refusals, "policy-events"))
    leader = rt.metrics.leader
    spawned.append(
        rt.tasks.spawn(
            run_under_lease(
                client.CoordinationV1Api(api),
                settings.lease_namespace,
                settings.lease_name,
                [rebalancer.run],
                on_change=lambda leading: leader.set(1 if leading else 0),
                identity=settings.identity,
            ),
            "rebalancer",
        )
    )
    yield
    await rt.tasks.stop(spawned)
    await api.close()


def workload_reflectors(
    core: Any,  # kubernetes.aio CoreV1Api
    apps: Any,  # kubernetes.aio AppsV1Api
    pods: Callable[[str, PodRecord | None, PodRecord | None], None],
    replicasets: Callable[[str, str | None, str | None], None],
    deployments: Callable[[str, DeploymentRecord | None, DeploymentRecord | None], None],
) -> tuple[Reflector[PodRecord], Reflector[str | None], Reflector[DeploymentRecord]]:
    """Our scheduler's pods, and the ReplicaSets and Deployments that own them.

    Readers use each reflector's `facts` and the per-change hooks; nothing is
    published into the scorer's Snapshot, which pods are not part of.
    """

    return (
        Reflector(
            "pods",
            lambda **kw: core.list_pod_for_all_namespaces_without_preload_content(
                field_selector=f"spec.schedulerName={SCHEDULER_NAME}", **kw
            ),
            PodRecord.from_pod,
            None,
            key=namespaced_name,
            observe=pods,
        ),
        Reflector(
            "replicasets",
            apps.list_replica_set_for_all_namespaces_without_preload_content,
            replicaset_owner,
            None,
            key=namespaced_name,
            observe=replicasets,
        ),
        Reflector(
            "deployments",
            apps.list_deployment_for_all_namespaces_without_preload_content,
            DeploymentRecord.from_deployment,
            None,
            key=namespaced_name,
            observe=deployments,
        ),
    )


async def _readyz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    waiting = [r.name for r in rt.reflectors if not r.synced]
    degraded = [f"{n}: {h.detail}" for n, h in sorted(rt.store.sources.items()) if not h.ok]
    if rt.policy.last_error is not None:
        degraded.append(
            f"policy: last reload refused, {len(rt.policy.last_error.problems)} problem(s)"
        )
    rb = rt.rebalancer
    body = {
        "ready": not waiting and rb is not None,
        "waiting": waiting,
        "degraded": degraded,
        "leading": bool(rb and rb.leading),
        "dryRun": rt.settings.dry_run,
        "policy": rt.policy.current.version,
        "managedPods": len(rb.index.pods) if rb else 0,
        "plans": rb.plans if rb else 0,
        "time": time.time(),
    }
    return json_response(body, 200 if body["ready"] else 503)
