"""JSON over HTTP for our aiohttp handlers: the response, and a request body read with
the encodings we refuse (the scheduler extender webhook, the admission webhook)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import hdrs, web


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


# Content codings we read: none. kube-scheduler's extender client sends plain JSON and
# never a Content-Encoding. Refusing the others (415, RFC 7694) rather than inflating
# within the body limit means a compressed body is never expanded at all: no decompressor
# to size, nothing in memory beyond the bytes received (the app turns the server's
# auto_decompress off, so aiohttp does not inflate ahead of the handler either).
_IDENTITY = frozenset({"", "identity"})


def _refused_encoding(request: web.Request) -> web.HTTPUnsupportedMediaType | None:
    headers = request.headers.getall(hdrs.CONTENT_ENCODING, [])
    codings = [c.strip().lower() for h in headers for c in h.split(",")]
    unsupported = [c for c in codings if c not in _IDENTITY]
    if not unsupported:
        return None
    reason = (
        f"Content-Encoding {', '.join(unsupported)} is not accepted: "
        "send the body as plain JSON (kube-scheduler never compresses extender requests)"
    )
    return web.HTTPUnsupportedMediaType(
        text=orjson.dumps({"error": reason}).decode(),
        content_type="application/json",
        headers={"Accept-Encoding": "identity"},
    )


async def read_body(request: web.Request) -> bytes:
    refused = _refused_encoding(request)
    if refused is not None:
        raise refused  # before reading: the body is drained or the connection closed
    # aiohttp raises 413 itself past client_max_size.
    return await request.read()
