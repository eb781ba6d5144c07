"""The /admit handler and the HTTPS listener the apiserver calls it on."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from cloud4iot.httpjson import json_response, read_body
from extender.admission.narrow import Narrowed, Skipped, affinity_patch, decide
from extender.admission.review import ReviewError, answer, parse_review
from extender.runtime import RUNTIME, Runtime
from extender.tls import CertReloader, TlsFiles

log = logging.getLogger(__name__)


async def admit_handler(request: web.Request) -> web.Response:
    """Answer an AdmissionReview: allowed, narrowed when `narrow.decide` says so."""
    rt = request.app[RUNTIME]
    metrics = rt.metrics
    body = await read_body(request)  # 415 on a Content-Encoding, 413 past the body limit
    try:
        review = parse_review(body)
    except ReviewError as exc:
        metrics.admissions.labels("invalid").inc()
        return json_response({"error": str(exc)}, status=400)
    if review.operation != "CREATE" or review.kind != "Pod":
        metrics.admissions.labels("skipped").inc()
        return json_response(answer(review.uid))
    try:
        outcome = decide(
            review.obj,
            rt.state.snapshot,
            rt.policy.current.policy,
            rt.clock(),
            rt.settings.candidates,
            rt.admission_rng,
            rt.tables,
        )
        patch = affinity_patch(review.obj, outcome) if isinstance(outcome, Narrowed) else None
    except Exception:
        # A bug must not block pod creation: admit unchanged, count it, log it.
        log.exception("admission narrowing failed for request %s", review.uid)
        metrics.admissions.labels("error").inc()
        return json_response(answer(review.uid))
    metrics.admissions.labels("narrowed" if patch else "skipped").inc()
    if isinstance(outcome, Skipped):
        metrics.admissions_skipped.labels(outcome.code).inc()
        log.debug("admitted %s unpinned: %s", review.uid, outcome.reason)
    return json_response(answer(review.uid, patch))


def _admission_app(parent: web.Application) -> web.Application:
    rt = parent[RUNTIME]
    app = web.Application(
        client_max_size=rt.settings.max_body_bytes, handler_args={"auto_decompress": False}
    )
    app[RUNTIME] = rt  # the same Runtime, not a copy
    app.router.add_post("/admit", admit_handler)
    return app


def open_admission_tls(rt: Runtime) -> None:
    """Load the admission certificate now (create_app): a bad one is a clean start-up
    error (`extender.tls.TlsError`), not a traceback from the listener."""
    settings = rt.settings
    assert settings.admission_cert is not None
    assert settings.admission_key is not None
    rt.admission_tls = CertReloader.open(TlsFiles(settings.admission_cert, settings.admission_key))


async def admission_listener(parent: web.Application) -> AsyncIterator[None]:
    """Serve /admit over HTTPS on `settings.admission_port`, reloading its certificate."""
    rt = parent[RUNTIME]
    settings, tls = rt.settings, rt.admission_tls
    assert settings.admission_port is not None
    assert tls is not None
    runner = web.AppRunner(_admission_app(parent), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.admission_port, ssl_context=tls.context)
        await site.start()
    except BaseException:
        await runner.cleanup()  # a busy port: nothing left running behind the error
        raise
    reloads = rt.metrics.tls_reloads
    watcher = rt.tasks.spawn(
        tls.watch(settings.tls_poll_interval, lambda r: reloads.labels(r).inc()),
        "admission-tls-reload",
    )
    yield
    await runner.cleanup()
    await rt.tasks.stop([watcher])
