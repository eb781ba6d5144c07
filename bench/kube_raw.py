"""The scheduler bench's apiserver client: raw JSON over one aiohttp session.

    python -m bench.kube_raw KUBECONFIG PODS.json NAMESPACE CONCURRENCY

creates the pods of a JSON list and prints `{"start": ..., "end": ...}` (monotonic
clock, shared by every process of the machine). The bench runs that in a process
of its own: when one event loop both created the pods and read the watch, the
watch fell behind during the burst and the apiserver closed it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml


class Api:
    """Just enough of the apiserver for the bench: raw JSON over one aiohttp session."""

    def __init__(self, kubeconfig: Path, concurrency: int) -> None:
        cfg = yaml.safe_load(kubeconfig.read_text())
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        self.base = str(cluster["server"])
        self.ssl = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self.ssl.load_cert_chain(user["client-certificate"], user["client-key"])
        self.concurrency = concurrency
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        connector = aiohttp.TCPConnector(limit=self.concurrency, ssl=self.ssl)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_read=120)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (200, 201),
    ) -> Any:
        assert self.session is not None
        data = orjson.dumps(body) if body is not None else None
        async with self.session.request(
            method, self.base + path, data=data, headers={"Content-Type": content_type}
        ) as resp:
            raw = await resp.read()
            if resp.status not in ok:
                raise RuntimeError(f"{method} {path}: {resp.status} {raw[:300]!r}")
            return orjson.loads(raw) if raw else None

    async def text(self, path: str) -> str:
        """A plain-text GET (the apiserver's /metrics)."""
        return (await self.raw(path)).decode()

    async def raw(self, path: str) -> bytes:
        """A GET of the body as is (also the apiserver's /debug/pprof/profile)."""
        assert self.session is not None
        async with self.session.get(self.base + path) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: {resp.status} {body[:300]!r}")
            return body

    async def watch(self, path: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        assert self.session is not None
        url = (
            f"{self.base}{path}?watch=1&allowWatchBookmarks=true&resourceVersion={resource_version}"
        )
        async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            if resp.status != 200:
                raise RuntimeError(f"watch {path}: {resp.status}")
            # Split the lines ourselves: iterating `resp.content` by line stalled
            # after ~100 events of a busy stream (aiohttp 3.14), the rest unread.
            pending = b""
            async for chunk in resp.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield orjson.loads(line)


async def gather_limited(n: int, coros: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(n)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def create_pods(
    kubeconfig: Path, manifests: list[dict[str, Any]], namespace: str, concurrency: int
) -> tuple[float, float]:
    """Create every pod at once; (first request sent, last answer) on the monotonic clock."""
    async with Api(kubeconfig, concurrency) as api:
        path = f"/api/v1/namespaces/{namespace}/pods"
        start = time.monotonic()
        await gather_limited(concurrency, [api.call("POST", path, m) for m in manifests])
        return start, time.monotonic()


def main(argv: list[str]) -> None:
    kubeconfig, pods_file, namespace, concurrency = argv
    manifests = json.loads(Path(pods_file).read_text())
    start, end = asyncio.run(create_pods(Path(kubeconfig), manifests, namespace, int(concurrency)))
    print(json.dumps({"start": start, "end": end}))


if __name__ == "__main__":
    main(sys.argv[1:])
