"""The extender's aiohttp application: routes and background tasks, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import web

from extender import webhook
from extender.keys import CLOCK, METRICS, POLICY, SETTINGS, STATE
from extender.metrics import Metrics, age_since
from extender.policy.store import PolicyStore
from extender.settings import Settings
from extender.state.snapshot import Snapshot
from extender.state.store import StateStore

log = logging.getLogger(__name__)

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def create_app(
    settings: Settings,
    *,
    policy: PolicyStore | None = None,
    state: StateStore | None = None,
    sources: list[CleanupCtx] | None = None,
) -> web.Application:
    """Build the app. The policy is loaded here only when not given (tests pass one).

    `sources` are cleanup contexts that keep the state current (Kubernetes watches,
    the Prometheus refresher); by default they follow the settings.
    """
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[POLICY] = policy or PolicyStore.open(settings.policy_path)
    app[STATE], app[CLOCK] = (state, time.time) if state else initial_state(settings)
    app[METRICS] = Metrics()
    _wire_metrics(app)

    app.router.add_post("/filter", webhook.filter_handler)
    app.router.add_post("/prioritize", webhook.prioritize_handler)
    app.router.add_post("/explain", webhook.explain_handler)
    app.router.add_get("/healthz", webhook.healthz)
    app.router.add_get("/readyz", webhook.readyz)
    app.router.add_get("/metrics", webhook.metrics_handler)

    app.cleanup_ctx.append(_policy_reloader)
    for source in sources if sources is not None else default_sources(settings):
        app.cleanup_ctx.append(source)
    return app


def initial_state(settings: Settings) -> tuple[StateStore, Callable[[], float]]:
    """An empty store on wall time, or a state file's world on its own clock."""
    if settings.state_path is None:
        # Standalone (no cluster): there will never be Devices to wait for.
        standalone = not settings.cluster_configured
        return StateStore(snapshot=Snapshot(devices_synced=standalone)), time.time
    from extender.simulate import load_state

    snapshot, now = load_state(settings.state_path)
    started = time.monotonic()
    # The file's timestamps stay as meaningful as when it was written: its world
    # starts at its `now` and ages in real time from there.
    return StateStore(snapshot=snapshot), lambda: now + (time.monotonic() - started)


def default_sources(settings: Settings) -> list[CleanupCtx]:
    found: list[CleanupCtx] = []
    if settings.cluster_configured:
        from extender.state.kube import kube_state

        found.append(kube_state)
    if settings.prometheus_url:
        from extender.state.prometheus import prometheus_refresher

        found.append(prometheus_refresher)
    return found


def _wire_metrics(app: web.Application) -> None:
    metrics, store, policy = app[METRICS], app[STATE], app[POLICY]
    metrics.set_policy(policy.current.policy.metadata.name, policy.current.digest)
    metrics.set_age_function("prometheus", lambda: age_since(store.snapshot.load_refreshed_at))

    def up(source: str) -> Callable[[], float]:
        return lambda: 1.0 if source in store.sources and store.sources[source].ok else 0.0

    for source in ("kubernetes", "prometheus"):
        metrics.source_up.labels(source).set_function(up(source))
    metrics.objects.labels("node").set_function(lambda: len(store.snapshot.nodes))
    metrics.objects.labels("device").set_function(lambda: len(store.snapshot.devices))


async def run_forever(
    name: str, body: Callable[[], Coroutine[Any, Any, None]]
) -> AsyncIterator[None]:
    """Run a background loop for the app's lifetime; log (not swallow) its crash."""
    task = asyncio.create_task(body(), name=name)

    def _done(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("background task %s died", name, exc_info=t.exception())

    task.add_done_callback(_done)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _policy_reloader(app: web.Application) -> AsyncIterator[None]:
    store, metrics = app[POLICY], app[METRICS]

    async def loop() -> None:
        while True:
            await asyncio.sleep(app[SETTINGS].policy_poll_interval)
            try:
                result = await asyncio.to_thread(store.check_once)
            except Exception:  # a bug must not end reloading for good
                log.exception("policy reload failed unexpectedly; the policy in force stays")
                result = "refused"
            if result != "unchanged":
                metrics.policy_reloads.labels(result).inc()
            if result == "applied":
                metrics.set_policy(store.current.policy.metadata.name, store.current.digest)

    async for _ in run_forever("policy-reload", loop):
        yield
