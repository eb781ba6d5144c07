"""The /admit handler and the HTTPS listener the apiserver calls it on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable

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
            rt.admission_tables,
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


def _admission_app(rt: Runtime) -> web.Application:
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


class AdmissionThread:
    """/admit served on its own event loop in its own thread.

    Why: on the extender's loop an admission waited behind every /filter and
    /prioritize in flight (kube-scheduler calls them back to back), and pod creation
    is what bounded the scheduler path at 5,000 nodes (BENCHMARKS.md). Here it
    queues only behind other admissions; the GIL is still shared, but a CPU-bound
    handler on either side now yields it every switch interval (5 ms) instead of
    holding the other's whole queue. It reads the same Runtime: frozen snapshots
    and the policy in force, rebound atomically by the sources; its own TableCache
    and random generator, which are not shared across threads. Its certificate is
    reloaded on its own loop, between its own handshakes.
    """

    def __init__(self, rt: Runtime, on_exit: Callable[[], object] | None = None) -> None:
        self.rt, self._on_exit = rt, on_exit
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="admission", daemon=True)

    def start(self) -> None:
        """Start serving; blocks until listening, raises what binding raised."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            if not self._ready.is_set():
                self._error = exc
            else:
                log.exception("the admission listener ended")
        finally:
            self._ready.set()
            loop.close()
            if self._on_exit is not None:
                with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                    self._on_exit()

    async def _serve(self) -> None:
        rt = self.rt
        settings, tls = rt.settings, rt.admission_tls
        assert settings.admission_port is not None
        assert tls is not None
        self._stop = asyncio.Event()
        runner = web.AppRunner(_admission_app(rt), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, settings.host, settings.admission_port, ssl_context=tls.context
            )
            await site.start()
        except BaseException:
            await runner.cleanup()  # a busy port: nothing left running behind the error
            raise
        self._ready.set()
        reloads = rt.metrics.tls_reloads
        watcher = asyncio.create_task(
            tls.watch(settings.tls_poll_interval, lambda r: reloads.labels(r).inc()),
            name="admission-tls-reload",
        )
        try:
            await self._stop.wait()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await runner.cleanup()


async def admission_listener(parent: web.Application) -> AsyncIterator[None]:
    """Serve /admit over HTTPS on `settings.admission_port` (AdmissionThread); the
    thread ending unasked fails /healthz like any dead task."""
    rt = parent[RUNTIME]
    loop, ended = asyncio.get_running_loop(), asyncio.Event()
    server = AdmissionThread(rt, on_exit=lambda: loop.call_soon_threadsafe(ended.set))
    await asyncio.to_thread(server.start)
    watcher = rt.tasks.spawn(ended.wait(), "admission-listener")  # type: ignore[arg-type]
    yield
    await rt.tasks.stop([watcher])
    await asyncio.to_thread(server.stop)
