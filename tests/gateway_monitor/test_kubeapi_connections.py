"""The monitor's own HTTP client against a stand-in server: kept-alive connections."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway_monitor.kubeapi import Endpoint, KubeApi


class Server:
    """Answers 200 {} to each request; `drop_post` closes the connection after
    reading a POST instead (the apiserver restarting mid-request); `close_idle`
    closes each connection after its first answer (an idle timeout)."""

    def __init__(self, *, drop_post: bool = False, close_idle: bool = False) -> None:
        self.drop_post, self.close_idle = drop_post, close_idle
        self.received: list[str] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
                length = next(
                    (int(h.split(":")[1]) for h in head if h.lower().startswith("content-length")),
                    0,
                )
                await reader.readexactly(length)
                method = head[0].split(" ")[0]
                self.received.append(method)
                if method == "POST" and self.drop_post:
                    writer.close()
                    return
                data = json.dumps({"ok": True}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
                if self.close_idle:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def serving(server: Server) -> tuple[asyncio.Server, KubeApi]:
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    return listening, KubeApi(Endpoint("127.0.0.1", port, None))


async def test_a_write_the_server_may_have_got_is_not_sent_again() -> None:
    server = Server(drop_post=True)
    listening, api = await serving(server)
    try:
        assert await api.request("GET", "/api") == {"ok": True}  # a kept-alive connection
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await api.request("POST", "/api/v1/things", body={})
        assert server.received == ["GET", "POST"]  # one POST: the caller decides to retry
    finally:
        await api.close()
        listening.close()


async def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    server = Server(close_idle=True)
    listening, api = await serving(server)
    try:
        for method in ("GET", "POST", "PUT", "GET"):
            await asyncio.sleep(0.05)  # (the server's close arrives meanwhile)
            assert await api.request(method, "/api/v1/things", body={}) == {"ok": True}
        assert server.received == ["GET", "POST", "PUT", "GET"]
        assert server.connections == 4
    finally:
        await api.close()
        listening.close()
