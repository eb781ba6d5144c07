"""Batches to the cloud: a bounded FIFO queue drained by HTTP POSTs, retried with backoff.

A batch is one JSON document and one POST (``Content-Type: application/json``)::

    {"batch_id": "<source>/<boot>/<sequence>", "sequence": 17, "kind": "summary",
     "window": {...}, "data_points": [<Open mHealth data point>, ...]}

Delivery: batches leave in the order they were submitted, one at a time. A 2xx
acknowledges the batch; any other 4xx than 408, 425 and 429 means the cloud will never
take it, so it is counted as rejected and dropped rather than blocking everything behind
it; every other answer (a 5xx, 408, 425, 429, a redirect, which is not followed: a
redirected POST would become a GET whose 200 acknowledges nothing), a connection error or
a timeout keeps it at the head of the queue and retries it after a capped exponential
backoff (``Retry-After`` is honoured up to the cap). At most ``ANSWER_BYTES`` of an
answer's body are read. A POST whose
answer is lost may have been stored: the retry carries the same ``batch_id`` (also sent
as ``Idempotency-Key``), so the ingest can drop the duplicate.

The queue (``queue.BatchQueue``) is bounded by batches and bytes and, with ``QUEUE_DIR``,
lives in an append-only log on the gateway's disk, so a crash loses nothing. A full queue
drops the oldest waiting batch that is not an alert, or the oldest alert if only alerts
are waiting. Dropped batches and their bytes are counted (``batches_dropped_total{kind}``)
and logged; their sequence numbers are then missing at the cloud, which can tell exactly
what was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

import aiohttp

from omh_consolidator.metrics import Metrics
from omh_consolidator.queue import Batch, BatchQueue

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429})
ANSWER_BYTES = 4096  # of an answer's body: only its status matters (a proxy's page can be huge)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential delays: attempt 1 waits ``initial_s``, then x``factor``."""

    initial_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 60.0
    jitter: float = 0.1  # +/- this fraction, when a random source is given

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.factor < 1 or self.cap_s < self.initial_s:
            raise ValueError(f"bad backoff {self}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        exponent = min(max(attempt - 1, 0), 64)  # 2**64 * anything is past any cap
        base = min(self.cap_s, self.initial_s * self.factor**exponent)
        if rng is not None and self.jitter:
            base *= 1 + rng.uniform(-self.jitter, self.jitter)
        return min(base, self.cap_s)


class Sink(Protocol):
    def submit(self, kind: str, data_points: list[dict[str, Any]], **fields: Any) -> Batch: ...

    async def run(self) -> None: ...

    async def drain(self, timeout_s: float) -> bool: ...


def new_instance() -> str:
    """This process's boot id: in every batch id, and the name of its queue directory."""
    return uuid.uuid4().hex[:12]


class _Numbering:
    def __init__(self, source: str, instance: str | None = None) -> None:
        # unique across restarts and moves
        self.prefix = f"{source}/{instance or new_instance()}"
        self.sequence = 0

    def make(self, kind: str, data_points: list[dict[str, Any]], fields: dict[str, Any]) -> Batch:
        self.sequence += 1
        batch_id = f"{self.prefix}/{self.sequence}"
        doc = {"batch_id": batch_id, "sequence": self.sequence, "kind": kind, **fields}
        doc["data_points"] = data_points
        body = json.dumps(doc, separators=(",", ":")).encode()
        return Batch(self.sequence, batch_id, kind, body, len(data_points))


class HttpForwarder:
    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        source: str,
        max_queue: int = 1440,
        queue: BatchQueue | None = None,
        instance: str | None = None,
        backoff: Backoff | None = None,
        timeout_s: float = 10.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.url = url
        # no queue given: one in memory only (tools and tests)
        self.queue = queue if queue is not None else BatchQueue(metrics, max_batches=max_queue)
        self._session = session
        self._metrics = metrics
        self._numbering = _Numbering(source, instance)
        self._backoff = backoff or Backoff()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._rng = rng
        self._sleep = sleep
        self._idle = asyncio.Event()  # no POST in flight
        self._idle.set()
        self._going = asyncio.Event()  # cleared by hold(): no new POST
        self._going.set()

    @property
    def pending(self) -> int:
        return len(self.queue)

    @property
    def instance(self) -> str:
        return self._numbering.prefix.rsplit("/", 1)[1]

    def submit(self, kind: str, data_points: list[dict[str, Any]], **fields: Any) -> Batch:
        batch = self._numbering.make(kind, data_points, fields)
        self.queue.append(batch)
        self._metrics.inc("batches_queued_total", kind=kind)
        return batch

    async def run(self) -> None:
        """Send the queue's head until cancelled; a cancelled POST leaves its batch at the
        head (it may have arrived: its retry, here or where it is handed, has the same id)."""
        failures = 0
        try:
            while True:
                await self._going.wait()
                batch = self.queue.take()
                if batch is None:
                    self.queue.changed.clear()
                    await self.queue.changed.wait()
                    continue
                self._idle.clear()
                try:
                    retry_after = await self._post(batch)
                finally:
                    self._idle.set()
                if retry_after is None:
                    failures = 0
                    continue
                failures += 1
                delay = self._backoff.delay(failures, self._rng)
                await self._sleep(min(max(delay, retry_after), self._backoff.cap_s))
        finally:
            self.queue.release()

    async def hold(self, timeout_s: float) -> bool:
        """Start no new POST until ``resume``, and wait up to ``timeout_s`` for the one in
        flight to be answered (its own timeout bounds it); True once none is in flight.
        Cutting a POST instead would waste it and may store a duplicate."""
        self._going.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self._idle.is_set()

    def resume(self) -> None:
        self._going.set()

    async def _post(self, batch: Batch) -> float | None:
        """None when the batch is done with (acknowledged or rejected); else a minimum
        delay before the retry (0 unless the answer said ``Retry-After``)."""
        self._metrics.inc("post_attempts_total")
        headers = {"Content-Type": "application/json", "Idempotency-Key": batch.batch_id}
        try:
            async with self._session.post(
                self.url,
                data=batch.body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                answer = await resp.content.read(ANSWER_BYTES)
                status = resp.status
                retry_after = _seconds(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else "connection"
            self._metrics.inc("post_failures_total", reason=reason)
            log.info("POST %s failed (%s: %s); will retry", batch.batch_id, reason, exc)
            return 0.0
        if 200 <= status < 300:
            self._metrics.inc("batches_sent_total", kind=batch.kind)
            self._metrics.inc("batch_bytes_sent_total", len(batch.body), kind=batch.kind)
            self._metrics.inc("data_points_sent_total", batch.data_points)
            self.queue.done([batch], "sent")
            return None
        if not 400 <= status < 500 or status in RETRY_STATUSES:
            self._metrics.inc("post_failures_total", reason=f"http_{status}")
            log.info("POST %s answered %d; will retry", batch.batch_id, status)
            return retry_after
        self._metrics.inc("batches_rejected_total", kind=batch.kind)
        log.error("POST %s refused with %d (%r); dropped", batch.batch_id, status, answer[:200])
        self.queue.done([batch], "rejected")
        return None

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every submitted batch is done with; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(self.queue):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        return True


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except ValueError:  # an HTTP date: not worth parsing here
        return 0.0


class StdoutSink:
    """No ingest endpoint configured: each batch is a JSON line on stdout."""

    def __init__(self, metrics: Metrics, *, source: str, out: TextIO | None = None) -> None:
        self._metrics = metrics
        self._numbering = _Numbering(source)
        self._out = out

    def submit(self, kind: str, data_points: list[dict[str, Any]], **fields: Any) -> Batch:
        batch = self._numbering.make(kind, data_points, fields)
        out = self._out or sys.stdout
        out.write(batch.body.decode() + "\n")
        out.flush()
        self._metrics.inc("batches_queued_total", kind=kind)
        self._metrics.inc("batches_sent_total", kind=kind)
        self._metrics.inc("batch_bytes_sent_total", len(batch.body), kind=kind)
        self._metrics.inc("data_points_sent_total", batch.data_points)
        return batch

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def drain(self, timeout_s: float) -> bool:
        return True
