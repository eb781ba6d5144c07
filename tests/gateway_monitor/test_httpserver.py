"""The monitor's tiny HTTP server (gateway_monitor.httpserver): what the kubelet's probes
and Prometheus send is answered; anything else gets a clear status and is closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway_monitor import httpserver
from gateway_monitor.httpserver import Answer


def boom() -> Answer:
    raise RuntimeError("broken handler")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    routes = {"/healthz": lambda: Answer(200, "application/json", b'{"ok":true}'), "/boom": boom}
    server = await httpserver.serve(routes, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    return answer


async def test_get_and_head(port: int) -> None:
    got = await exchange(port, b"GET /healthz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: application/json\r\n" in got
    assert b"Content-Length: 11\r\n" in got
    assert got.endswith(b'\r\n\r\n{"ok":true}')
    head = await exchange(port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head.endswith(b"Content-Length: 11\r\nConnection: close\r\n\r\n")


@pytest.mark.parametrize(
    ("raw", "status", "says"),
    [
        (b"GET /nope HTTP/1.1\r\n\r\n", b"404", b"no /nope here; try /boom, /healthz"),
        (b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405", b"GET or HEAD only"),
        (b"GET healthz HTTP/1.1\r\n\r\n", b"400", b"bad request line"),
        (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", b"400", b"too large"),
        (b"GET /boom HTTP/1.1\r\n\r\n", b"500", b"internal error"),
    ],
)
async def test_bad_requests_are_answered_clearly(
    port: int, raw: bytes, status: bytes, says: bytes
) -> None:
    got = await exchange(port, raw)
    assert got.startswith(b"HTTP/1.1 " + status), got[:80]
    assert says in got


async def test_a_silent_client_is_dropped(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    monkeypatch.setattr(httpserver, "HEAD_TIMEOUT", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # never finishes its head
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # closed without an answer
    writer.close()
    # and the server still answers others
    assert (await exchange(port, b"GET /healthz HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")
