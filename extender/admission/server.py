"""The /admit handler and the HTTPS listener the apiserver calls it on."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator

from aiohttp import web

from cloud4iot.httpjson import json_response, read_body
from extender.admission.narrow import Narrowed, Skipped, affinity_patch, decide
from extender.admission.review import ReviewError, answer, parse_review
from extender.keys import CLOCK, METRICS, POLICY, SETTINGS, STATE, TASKS
from extender.tls import CertReloader, TlsFiles

log = logging.getLogger(__name__)

RNG = web.AppKey("admission_rng", random.Random)


async def admit_handler(request: web.Request) -> web.Response:
    """Answer an AdmissionReview: allowed, narrowed when `narrow.decide` says so."""
    app, metrics = request.app, request.app[METRICS]
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
            app[STATE].snapshot,
            app[POLICY].current.policy,
            app[CLOCK](),
            app[SETTINGS].candidates,
            app[RNG],
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
    app = web.Application(
        client_max_size=parent[SETTINGS].max_body_bytes, handler_args={"auto_decompress": False}
    )
    app[SETTINGS], app[POLICY], app[STATE] = parent[SETTINGS], parent[POLICY], parent[STATE]
    app[CLOCK], app[METRICS], app[TASKS] = parent[CLOCK], parent[METRICS], parent[TASKS]
    app[RNG] = random.Random()
    app.router.add_post("/admit", admit_handler)
    return app


ADMISSION_TLS = web.AppKey("admission_tls", CertReloader)


def open_admission_tls(app: web.Application) -> None:
    """Load the admission certificate now (create_app): a bad one is a clean start-up
    error (`extender.tls.TlsError`), not a traceback from the listener."""
    settings = app[SETTINGS]
    assert settings.admission_cert is not None
    assert settings.admission_key is not None
    app[ADMISSION_TLS] = CertReloader.open(
        TlsFiles(settings.admission_cert, settings.admission_key)
    )


async def admission_listener(parent: web.Application) -> AsyncIterator[None]:
    """Serve /admit over HTTPS on `settings.admission_port`, reloading its certificate."""
    settings = parent[SETTINGS]
    assert settings.admission_port is not None
    tls = parent[ADMISSION_TLS]
    runner = web.AppRunner(_admission_app(parent), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.admission_port, ssl_context=tls.context)
        await site.start()
    except BaseException:
        await runner.cleanup()  # a busy port: nothing left running behind the error
        raise
    reloads = parent[METRICS].tls_reloads
    watcher = parent[TASKS].spawn(
        tls.watch(settings.tls_poll_interval, lambda r: reloads.labels(r).inc()),
        "admission-tls-reload",
    )
    yield
    await runner.cleanup()
    await parent[TASKS].stop([watcher])
