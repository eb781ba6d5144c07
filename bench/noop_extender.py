"""The baseline: an extender that decides nothing (same aiohttp, same orjson).

Keeps every node and scores 0, after decoding the body as ours does, so the
difference to cloud4iot-extender is the cost of placement itself.
"""

from __future__ import annotations

import argparse

import orjson
from aiohttp import web


async def filter_(request: web.Request) -> web.Response:
    args = orjson.loads(await request.read())
    result = {
        "Nodes": args.get("Nodes"),
        "NodeNames": args.get("NodeNames"),
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": "",
    }
    return web.Response(body=orjson.dumps(result), content_type="application/json")


async def prioritize(request: web.Request) -> web.Response:
    args = orjson.loads(await request.read())
    names = args.get("NodeNames") or [n["metadata"]["name"] for n in args["Nodes"]["items"]]
    body = orjson.dumps([{"Host": n, "Score": 0} for n in names])
    return web.Response(body=body, content_type="application/json")


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/filter", filter_)
    app.router.add_post("/prioritize", prioritize)
    app.router.add_get("/readyz", healthz)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
