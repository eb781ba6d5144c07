"""The monitor's /metrics and /healthz over a few lines of asyncio, not aiohttp (16 MB of
a Pi-class gateway's 40 MB, issue 23 item 4).

Its clients are the kubelet's probes and Prometheus: GET (or HEAD) of a fixed path, no
body. Each answer closes its connection; a request head must arrive within
``HEAD_TIMEOUT`` and fit in ``MAX_HEAD`` bytes, anything else is answered 400/404/405
and closed, so a stuck or hostile client holds nothing for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

HEAD_TIMEOUT = 10.0
MAX_HEAD = 8192


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    content_type: str
    body: bytes


Route = Callable[[], Answer]
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def text(status: int, message: str) -> Answer:
    return Answer(status, "text/plain; charset=utf-8", message.encode())


async def _answer(routes: Mapping[str, Route], reader: asyncio.StreamReader) -> tuple[str, Answer]:
    try:
        async with asyncio.timeout(HEAD_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        return "GET", text(400, "request head too large\n")
    except (asyncio.IncompleteReadError, TimeoutError):
        raise ConnectionError("no complete request head") from None
    method, _, rest = head.decode("latin-1").partition(" ")
    target = rest.partition(" ")[0].partition("?")[0]
    if not target.startswith("/"):
        return method, text(400, "bad request line\n")
    route = routes.get(target)
    if route is None:
        return method, text(404, f"no {target} here; try {', '.join(sorted(routes))}\n")
    if method not in ("GET", "HEAD"):
        return method, text(405, "GET or HEAD only\n")
    try:
        return method, route()
    except Exception:
        log.exception("handler of %s failed", target)
        return method, text(500, "internal error\n")


async def serve(routes: Mapping[str, Route], host: str, port: int) -> asyncio.Server:
    """Start answering `routes` (path -> handler on the event loop) on host:port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, answer = await _answer(routes, reader)
            head = (
                f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Status')}\r\n"
                f"Content-Type: {answer.content_type}\r\n"
                f"Content-Length: {len(answer.body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(head if method == "HEAD" else head + answer.body)
            async with asyncio.timeout(HEAD_TIMEOUT):
                await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=MAX_HEAD)
