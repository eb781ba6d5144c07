"""Handing the queue to the pod that takes over, when this one is moved away.

A move (roaming, offloading) is a SIGTERM: the new pod runs on another gateway, whose disk
this one cannot reach, often while the cloud link is down (the case the queue exists for).
So once its reader has stopped, the leaving pod POSTs what still waits to a peer
(``HANDOVER_PEERS``: a headless Service resolving to every pod of this device, port 9104),
in chunks, oldest first. The peer appends a chunk to its own log in front of its own
batches, fsyncs it, and only then answers 200; the sender then marks the chunk done
("handed"). So a kill -9 on either side at any moment loses nothing: a chunk is always in
at least one log, and at most one chunk is in both, with the same batch ids, which the
cloud's ingest drops as duplicates (``Idempotency-Key``) and a receiver that has a batch
already skips. What a dead sender did not hand over stays in its log on its gateway, for
the next consolidator process there to adopt (``queue.py``).

Wire format: ``POST /v1/handover``, body = the log's batch records (length, CRC32,
payload), header ``X-Cloud4iot-Instance`` = the sender's boot id. A pod answers 409 to
itself (the Service lists the leaving pod too), 503 once it is leaving itself, and 507 while
its own log is behind (a full disk: the chunk is safer in the sender's log).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from omh_consolidator.forward import ANSWER_BYTES
from omh_consolidator.metrics import Metrics
from omh_consolidator.queue import BatchQueue, CorruptLogError, encode_batch, records

log = logging.getLogger(__name__)

PATH = "/v1/handover"
INSTANCE_HEADER = "X-Cloud4iot-Instance"
CHUNK_BATCHES = 64
CHUNK_BYTES = 1024 * 1024


class Receiver:
    """The handover endpoint of a running pod."""

    def __init__(self, queue: BatchQueue, metrics: Metrics, instance: str) -> None:
        self.queue = queue
        self.metrics = metrics
        self.instance = instance
        self.leaving = False
        self._lock = asyncio.Lock()

    async def handle(self, request: web.Request) -> web.Response:
        sender = request.headers.get(INSTANCE_HEADER, "")
        if sender == self.instance:
            return web.Response(status=409, text="that is me\n")
        if self.leaving:
            return web.Response(status=503, text="leaving too\n")
        data = await request.read()
        try:
            batches = [r.batch for r in records(data, strict=True) if r.batch is not None]
        except CorruptLogError as exc:
            log.warning("refused a handover from %s: %s", sender or "?", exc)
            return web.Response(status=400, text=f"{exc}\n")
        async with self._lock:  # one chunk at a time, each behind the ones before
            if self.queue.behind:  # our disk is full: the sender's log keeps them better
                return web.Response(status=507, text="queue log behind (disk full?)\n")
            new = self.queue.insert_handed(batches)
            if self.queue.behind:  # in our memory, not on disk: the sender keeps its copy
                return web.Response(status=507, text="queue log behind (disk full?)\n")
            await self.queue.sync()  # stored before we say so
            if self.queue.behind:  # the fsync failed: not stored, the sender keeps them
                return web.Response(status=507, text="queue log behind (fsync failed)\n")
        self.metrics.inc("handover_batches_received_total", new)
        if new:
            log.info("took over %d batches from %s", new, sender or "?")
        return web.json_response({"accepted": len(batches), "new": new})


def handover_app(receiver: Receiver, max_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_bytes)
    app.router.add_post(PATH, receiver.handle)
    return app


async def resolve(peers: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Every address of every peer (a headless Service name gives one per pod)."""
    loop = asyncio.get_running_loop()
    out: list[tuple[str, int]] = []
    for host, port in peers:
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.info("handover peer %s: %s", host, exc)
            continue
        for info in infos:
            addr = (str(info[4][0]), port)
            if addr not in out:
                out.append(addr)
    return out


async def hand_over(
    queue: BatchQueue,
    peers: Sequence[tuple[str, int]],
    session: aiohttp.ClientSession,
    metrics: Metrics,
    instance: str,
    *,
    timeout_s: float = 10.0,
) -> int:
    """Hand every waiting batch (the forwarder stopped) to the first peer that takes
    them; returns how many were handed. Stops at the first peer that fails mid-way."""
    handed = 0
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    for host, port in await resolve(peers):
        url = f"http://{_bracket(host)}:{port}{PATH}"
        while len(queue):
            chunk = queue.waiting(CHUNK_BATCHES, CHUNK_BYTES)
            body = b"".join(encode_batch(b, 0) for b in chunk)
            try:
                async with session.post(
                    url,
                    data=body,
                    headers={INSTANCE_HEADER: instance},
                    timeout=timeout,
                    allow_redirects=False,
                ) as resp:
                    await resp.content.read(ANSWER_BYTES)  # only its status matters
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                metrics.inc("handover_failures_total", reason="connection")
                log.info("handover to %s failed: %s", url, exc)
                break
            if status != 200:
                if status != 409:
                    metrics.inc("handover_failures_total", reason=f"http_{status}")
                    log.info("handover to %s answered %d", url, status)
                break
            queue.done(chunk, "handed")
            handed += len(chunk)
            metrics.inc("handover_batches_sent_total", len(chunk))
        if not len(queue):
            log.info("handed %d batches over to %s", handed, url)
            break
    return handed


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
