"""A peer whose 503 page never ends (a proxy's, 400 MiB in the review): only its status
matters, and a client that reads such an answer whole waits for its own timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web


def endless_503(
    finish: asyncio.Event,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that reads the request, announces 400 MiB with a 503, sends 64 KiB and
    then nothing more until ``finish`` is set."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=503)
        resp.content_length = 400 * 1024 * 1024
        await resp.prepare(request)
        await resp.write(b"x" * 65536)
        await finish.wait()  # the rest never comes
        return resp

    return answer
