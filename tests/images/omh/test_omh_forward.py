"""The cloud forwarder against a real HTTP server that fails for a while, then recovers."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from omh_consolidator.forward import Backoff, HttpForwarder
from omh_consolidator.metrics import Metrics
from omh_consolidator.queue import Batch

from tests.images.omh.endless_answer import endless_503
from tests.waiting import eventually

FAST = Backoff(initial_s=0.01, factor=2.0, cap_s=0.05, jitter=0.0)


class Ingest:
    """An ingest endpoint: stores batches by id (a duplicate is kept once and counted).

    ``fail`` decides per request: None = accept, an int = answer that status, "reset" =
    close the connection without an answer, "lost" = store, then close without answering.
    """

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.order: list[int] = []  # sequences, in the order they were stored
        self.requests: list[tuple[str, str]] = []  # (Idempotency-Key, body batch_id)
        self.duplicates = 0
        self.fail: Callable[[int], int | str | None] = lambda _n: None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        doc = json.loads(await request.read())
        self.requests.append((request.headers["Idempotency-Key"], doc["batch_id"]))
        verdict = self.fail(len(self.requests))
        if verdict == "reset":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)  # never reaches the client
        if isinstance(verdict, int):
            return web.Response(status=verdict, headers={"Retry-After": "0"})
        if doc["batch_id"] in self.stored:
            self.duplicates += 1
        else:
            self.stored[doc["batch_id"]] = doc
            self.order.append(doc["sequence"])
        if verdict == "lost":
            assert request.transport is not None
            request.transport.close()
        return web.json_response({"ok": True})


@pytest.fixture
async def ingest() -> Any:
    box = Ingest()
    app = web.Application()
    app.router.add_post("/ingest", box.handle)
    server = TestServer(app)
    await server.start_server()
    box.url = str(server.make_url("/ingest"))  # type: ignore[attr-defined]
    try:
        yield box
    finally:
        await server.close()


async def forwarding(
    ingest: Ingest, body: Callable[[HttpForwarder, Metrics], Awaitable[None]], **kw: Any
) -> Metrics:
    metrics = Metrics()
    async with aiohttp.ClientSession() as session:
        fwd = HttpForwarder(
            ingest.url, session, metrics, source="t", backoff=FAST, timeout_s=2, **kw
        )  # type: ignore[attr-defined]
        task = asyncio.create_task(fwd.run())
        try:
            await body(fwd, metrics)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    return metrics


def points(n: int) -> list[dict[str, Any]]:
    return [{"n": i} for i in range(n)]


async def test_an_outage_shorter_than_the_queue_loses_nothing_and_keeps_order(
    ingest: Ingest,
) -> None:
    outage = {"on": True}
    # down: a mix of 503s, 429s and dropped connections
    ingest.fail = lambda n: [503, 429, "reset"][n % 3] if outage["on"] else None

    async def body(fwd: HttpForwarder, metrics: Metrics) -> None:
        for i in range(20):
            fwd.submit("alert" if i % 7 == 3 else "summary", points(3), window={"i": i})
            await asyncio.sleep(0.005)
        await eventually(lambda: metrics.total("post_failures_total") >= 10)
        assert ingest.stored == {}
        assert fwd.pending == 20
        assert metrics.get("queue_batches") == 20
        outage["on"] = False
        assert await fwd.drain(10.0)

    metrics = await forwarding(ingest, body, max_queue=20)
    assert ingest.order == list(range(1, 21))  # every batch once, in order
    assert ingest.duplicates == 0
    assert [
        d["window"]["i"] for d in sorted(ingest.stored.values(), key=lambda d: d["sequence"])
    ] == list(range(20))
    assert metrics.total("batches_sent_total") == 20
    assert metrics.get("data_points_sent_total") == 60
    assert metrics.total("batches_dropped_total") == 0
    assert metrics.get("queue_batches") == 0
    assert metrics.get("queue_bytes") == 0
    failures = {
        r: metrics.get("post_failures_total", reason=r)
        for r in ("http_503", "http_429", "connection")
    }
    assert all(v > 0 for v in failures.values()), failures
    assert metrics.get("post_attempts_total") == 20 + metrics.total("post_failures_total")


async def test_a_lost_answer_is_retried_with_the_same_id_and_stored_once(ingest: Ingest) -> None:
    ingest.fail = lambda n: "lost" if n == 1 else None

    async def body(fwd: HttpForwarder, metrics: Metrics) -> None:
        fwd.submit("summary", points(3))
        fwd.submit("summary", points(3))
        assert await fwd.drain(5.0)

    await forwarding(ingest, body)
    assert len(ingest.requests) == 3
    assert ingest.requests[0] == ingest.requests[1]  # the retry is the same batch
    assert all(key == batch_id for key, batch_id in ingest.requests)
    assert ingest.duplicates == 1  # the ingest saw it twice and can drop the copy
    assert ingest.order == [1, 2]


async def test_overflow_drops_the_oldest_summaries_first_and_counts_them(ingest: Ingest) -> None:
    outage = {"on": True}
    ingest.fail = lambda _n: 503 if outage["on"] else None

    async def body(fwd: HttpForwarder, metrics: Metrics) -> None:
        fwd.submit("summary", points(3))  # 1: goes in flight, is never dropped
        await eventually(lambda: metrics.get("post_attempts_total") >= 1)
        kinds = ["summary", "alert", "summary", "summary", "alert", "summary", "summary"]
        for kind in kinds:  # sequences 2..8 into a queue of 3
            fwd.submit(kind, points(1))
        assert fwd.pending == 4  # 3 waiting + 1 in flight
        outage["on"] = False
        assert await fwd.drain(5.0)

    metrics = await forwarding(ingest, body, max_queue=3)
    # waiting after each submit: [2] [2,3a] [2,3a,4] -> drop 2: [3a,4,5] -> drop 4: [3a,5,6a]
    # -> drop 5: [3a,6a,7] -> drop 7: [3a,6a,8]
    assert ingest.order == [1, 3, 6, 8]
    assert metrics.get("batches_dropped_total", kind="summary") == 4
    assert metrics.get("batches_dropped_total", kind="alert") == 0
    assert metrics.get("batch_bytes_dropped_total") > 0


async def test_a_queue_of_only_alerts_drops_the_oldest_alert(ingest: Ingest) -> None:
    ingest.fail = lambda _n: 503

    async def body(fwd: HttpForwarder, metrics: Metrics) -> None:
        fwd.submit("alert", points(1))
        await eventually(lambda: metrics.get("post_attempts_total") >= 1)
        for _ in range(3):
            fwd.submit("alert", points(1))
        assert metrics.get("batches_dropped_total", kind="alert") == 1
        assert fwd.pending == 3

    await forwarding(ingest, body, max_queue=2)


async def test_a_4xx_is_rejected_once_and_does_not_block_the_queue(ingest: Ingest) -> None:
    ingest.fail = lambda n: 400 if n == 1 else None

    async def body(fwd: HttpForwarder, metrics: Metrics) -> None:
        fwd.submit("summary", points(3))
        fwd.submit("summary", points(3))
        assert await fwd.drain(5.0)

    metrics = await forwarding(ingest, body)
    assert ingest.order == [2]
    assert len(ingest.requests) == 2  # the refused batch was not retried
    assert metrics.get("batches_rejected_total", kind="summary") == 1


async def test_retry_after_is_honoured_up_to_the_cap(ingest: Ingest) -> None:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        await asyncio.sleep(0)

    answers = iter([503, 503, 503])

    async def handle(request: web.Request) -> web.Response:
        status = next(answers, 200)
        headers = {"Retry-After": "0.03"} if status == 503 and len(slept) == 0 else {}
        if status == 503 and len(slept) == 1:
            headers = {"Retry-After": "120"}
        return web.Response(status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/", handle)
    server = TestServer(app)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            fwd = HttpForwarder(
                str(server.make_url("/")), session, Metrics(), source="t", backoff=FAST, sleep=sleep
            )
            task = asyncio.create_task(fwd.run())
            fwd.submit("summary", points(1))
            assert await fwd.drain(5.0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await server.close()
    # own backoff 0.01, 0.02, 0.04; the server asked for 0.03 then 120 (capped at 0.05)
    assert slept == [0.03, 0.05, 0.04]


def test_backoff_doubles_to_the_cap_and_jitter_stays_in_bounds() -> None:
    b = Backoff(initial_s=1, factor=2, cap_s=60, jitter=0.1)
    assert [b.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert b.delay(10_000) == 60  # no overflow for a strap gone for a week
    rng = random.Random(7)
    jittered = [b.delay(3, rng) for _ in range(200)]
    assert min(jittered) >= 3.6
    assert max(jittered) <= 4.4
    assert len(set(jittered)) > 100  # really spread
    assert all(b.delay(20, rng) <= 60 for _ in range(50))


@pytest.mark.parametrize(
    "kwargs",
    [{"initial_s": 0}, {"factor": 0.5}, {"initial_s": 10, "cap_s": 5}, {"jitter": 1.0}],
)
def test_bad_backoff_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"backoff|jitter"):
        Backoff(**kwargs)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_not_followed_nor_taken_for_an_acknowledgement(status: int) -> None:
    # Followed, a 301/302/303 turns the POST into a GET whose landing page answers 200:
    # the batch was acknowledged and dropped, and nobody stored it.
    landed: list[str] = []

    async def ingest(request: web.Request) -> web.Response:
        raise _redirect(status)

    async def landing(request: web.Request) -> web.Response:
        landed.append(request.method)
        return web.Response(text="<html>welcome</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/ingest", ingest)
    app.router.add_route("*", "/landing", landing)
    async with TestServer(app) as server:
        metrics = Metrics()
        async with aiohttp.ClientSession() as session:
            fwd = HttpForwarder(str(server.make_url("/ingest")), session, metrics, source="t")
            fwd.submit("alert", points(1))
            batch = fwd.queue.take()
            assert batch is not None
            assert await fwd._post(batch) == 0.0  # a retry
    assert landed == []
    assert len(fwd.queue) == 1  # still waits
    assert metrics.total("batches_sent_total") == 0
    assert metrics.total("batches_rejected_total") == 0
    assert metrics.get("post_failures_total", reason=f"http_{status}") == 1


@asynccontextmanager
async def one_batch_for(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], kind: str
) -> AsyncIterator[tuple[HttpForwarder, Batch, Metrics]]:
    """A forwarder (3 s timeout) to an ingest answered by ``handler``, and one batch of
    ``kind`` taken from its queue, for the test to ``_post``."""
    app = web.Application()
    app.router.add_post("/ingest", handler)
    async with TestServer(app) as server:
        metrics = Metrics()
        async with aiohttp.ClientSession() as session:
            fwd = HttpForwarder(
                str(server.make_url("/ingest")), session, metrics, source="t", timeout_s=3
            )
            fwd.submit(kind, points(1))
            batch = fwd.queue.take()
            assert batch is not None
            yield fwd, batch, metrics


def _redirect(status: int) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPMove]] = {
        301: web.HTTPMovedPermanently,
        302: web.HTTPFound,
        303: web.HTTPSeeOther,
        307: web.HTTPTemporaryRedirect,
        308: web.HTTPPermanentRedirect,
    }
    return kinds[status]("/landing")


@pytest.mark.parametrize(
    ("status", "outcome"), [(304, "retry"), (300, "retry"), (404, "reject"), (599, "retry")]
)
async def test_only_a_4xx_outside_the_retry_set_rejects_a_batch(status: int, outcome: str) -> None:
    async def ingest(request: web.Request) -> web.Response:
        return web.Response(status=status)

    async with one_batch_for(ingest, "alert") as (fwd, batch, metrics):
        await fwd._post(batch)
    assert len(fwd.queue) == (1 if outcome == "retry" else 0)
    assert metrics.total("batches_rejected_total") == (outcome == "reject")


async def test_a_huge_answer_is_not_read_whole() -> None:
    # A 503 page that never ends (a proxy's, 400 MiB in the review): only its status
    # matters. Reading it whole waited for all of it (here: the POST timed out).
    finish = asyncio.Event()
    async with one_batch_for(endless_503(finish), "summary") as (fwd, batch, metrics):
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await fwd._post(batch) == 0.0
        assert loop.time() - started < 2
        finish.set()  # lets the handler end before the server closes
    assert metrics.get("post_failures_total", reason="http_503") == 1
    assert metrics.get("post_failures_total", reason="timeout") == 0


async def test_leaving_with_no_peer_taking_the_queue_does_not_cut_posts_to_a_slow_cloud() -> None:
    # HANDOVER_PEERS set, nobody takes the queue (the device parked, the new pod not up):
    # every round used to cancel the POST in flight after <= 1 s, so a cloud answering in
    # 1.1 s acknowledged nothing and got the same batch again and again.
    from omh_consolidator.app import leave
    from omh_consolidator.config import from_env

    received: list[str] = []

    async def ingest(request: web.Request) -> web.Response:
        received.append(request.headers["Idempotency-Key"])
        await asyncio.sleep(1.1)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/ingest", ingest)
    cfg = from_env(
        {"DEVICE_NAME": "d", "DRAIN_SECONDS": "4.5", "HANDOVER_PEERS": "127.0.0.1:1"}
    )  # nobody listens on port 1: each handover is refused at once
    async with TestServer(app) as server:
        metrics = Metrics()
        async with aiohttp.ClientSession() as session:
            fwd = HttpForwarder(str(server.make_url("/ingest")), session, metrics, source="t")
            for _ in range(5):
                fwd.submit("summary", points(1))
            forwarding = asyncio.create_task(fwd.run())
            forwarding = await leave(cfg, fwd, forwarding, session, metrics)
            forwarding.cancel()
            await asyncio.gather(forwarding, return_exceptions=True)
    assert metrics.total("batches_sent_total") >= 3  # was 0
    assert len(received) == len(set(received))  # no batch sent twice
    assert metrics.total("handover_failures_total") >= 3  # it kept trying a peer meanwhile
