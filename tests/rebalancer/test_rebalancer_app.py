"""The rebalancer service's health and readiness answers, without a cluster."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp.test_utils import make_mocked_request

from rebalancer.app import (
    RUNTIME,
    RebalancerSettings,
    _readyz,
    create_rebalancer_app,
)


async def _healthz(request):  # type: ignore[no-untyped-def]
    """The /healthz route the app serves (the shared shell's)."""
    (route,) = [
        r
        for r in request.app.router.routes()
        if r.method == "GET" and r.resource.canonical == "/healthz"
    ]
    return await route.handler(request)


def app_for(repo_root):  # type: ignore[no-untyped-def]
    return create_rebalancer_app(
        RebalancerSettings(policy_path=repo_root / "policies" / "default.yaml")
    )


async def test_healthz_fails_once_a_background_task_died(repo_root) -> None:  # type: ignore[no-untyped-def]
    app = app_for(repo_root)
    assert (await _healthz(make_mocked_request("GET", "/healthz", app=app))).status == 200

    async def broken() -> None:
        raise RuntimeError("watch bug")

    task = app[RUNTIME].tasks.spawn(broken(), "watch-pods")
    await asyncio.wait({task})
    await asyncio.sleep(0)
    resp = await _healthz(make_mocked_request("GET", "/healthz", app=app))
    assert resp.status == 503
    assert resp.text == "background task ended: watch-pods: RuntimeError: watch bug"


async def test_readyz_is_503_until_the_caches_exist_and_names_the_policy(repo_root) -> None:  # type: ignore[no-untyped-def]
    app = app_for(repo_root)
    resp = await _readyz(make_mocked_request("GET", "/readyz", app=app))
    body = orjson.loads(resp.body)  # type: ignore[arg-type]
    assert resp.status == 503
    assert body["ready"] is False
    assert body["leading"] is False
    assert body["dryRun"] is False
    assert body["policy"].startswith("default@")
