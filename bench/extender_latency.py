"""Extender filter+prioritize latency and throughput, ours vs a no-op extender.

    .venv/bin/python -m devcluster bench extender-latency [--nodes 100 1000 5000] [--mode names full]

Both servers run as separate processes on loopback, fed the same requests by
one aiohttp client (concurrency 4, as kube-scheduler calls prioritize extenders
in parallel and schedules one pod at a time). One "call" is what kube-scheduler
does per pod: POST /filter, then POST /prioritize with the same nodes. Every
node is sent (the worst case: kube-scheduler samples ~10% of a 5,000-node
cluster). Prints a Markdown table with p50/p99 latency, calls/s and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from devcluster.processes import free_port, wait_http_ok

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("gateway", "edge", "cloud")


def world(n: int) -> dict[str, Any]:
    """n nodes (1/10 gateways, 3/10 edge, rest cloud), 2,000 devices, fresh load."""
    nodes: list[dict[str, Any]] = []
    load: dict[str, dict[str, Any]] = {}
    for i in range(n):
        tier = "gateway" if i % 10 == 0 else "edge" if i % 10 < 4 else "cloud"
        name = f"{tier}-{i:05d}"
        arch = "arm64" if tier == "gateway" else "amd64"
        nodes.append(
            {
                "metadata": {
                    "name": name,
                    "labels": {
                        "cloud4iot.io/tier": tier,
                        "kubernetes.io/arch": arch,
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                    },
                },
                "status": {
                    "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                },
            }
        )
        load[name] = {"cpu": (i % 7) / 10, "memory": (i % 5) / 10, "age": "1s"}
    gateways = [f"gateway-{i:05d}" for i in range(0, n, 10)]
    devices = [
        {
            "metadata": {"name": f"dev-{d}"},
            "spec": {"address": "AA:BB:CC:00:00:01"},
            "status": {
                "sightings": [
                    {"node": gateways[d % len(gateways)], "rssi": -60, "lastSeen": time.time()}
                ]
            },
        }
        for d in range(2000)
    ]
    return {"nodes": nodes, "devices": devices, "load": load}


@contextlib.contextmanager
def server(argv: list[str], port: int) -> Iterator[str]:
    proc = subprocess.Popen(argv, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(url + "/readyz", 20, pid=proc.pid)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def drive(url: str, bodies: list[bytes], calls: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for i in range(calls):
        queue.put_nowait(bodies[i % len(bodies)])
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                start = time.perf_counter()
                for verb in ("filter", "prioritize"):
                    async with session.post(f"{url}/{verb}", data=body) as resp:
                        assert resp.status == 200, await resp.text()
                        await resp.read()
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def pods() -> list[dict[str, Any]]:
    def pod(
        function: str | None, device: str | None = None, mode: str | None = None
    ) -> dict[str, Any]:
        ann = {
            k: v
            for k, v in {
                "cloud4iot.io/function": function,
                "cloud4iot.io/device": device,
                "cloud4iot.io/mode": mode,
            }.items()
            if v
        }
        return {
            "metadata": {"name": "p", "namespace": "bench", "annotations": ann},
            "spec": {"containers": [{"name": "c"}]},
        }

    return [
        pod("mhealth-consolidator", "dev-7"),
        pod("engine-diagnostic", "dev-3", "intensive"),
        pod("anonymiser"),
        pod(None),
    ]


def measure(
    n: int, mode: str, concurrency: int, policy: Path, tmp: Path
) -> dict[str, dict[str, float]]:
    w = world(n)
    state = tmp / f"state-{n}.yaml"
    state.write_text(yaml.safe_dump(w))
    if mode == "names":
        names = [nd["metadata"]["name"] for nd in w["nodes"]]
        bodies = [orjson.dumps({"Pod": p, "Nodes": None, "NodeNames": names}) for p in pods()]
    else:
        bodies = [
            orjson.dumps(
                {"Pod": p, "Nodes": {"metadata": {}, "items": w["nodes"]}, "NodeNames": None}
            )
            for p in pods()
        ]
    calls = max(40, min(800, 80_000 // n))
    out: dict[str, dict[str, float]] = {}
    ours_port, noop_port = free_port(), free_port()
    ours = [
        sys.executable,
        "-m",
        "extender",
        "--host",
        "127.0.0.1",
        "--port",
        str(ours_port),
        "--policy",
        str(policy),
        "--state",
        str(state),
        "--log-level",
        "WARNING",
    ]
    noop = [sys.executable, "-m", "bench.noop_extender", "--port", str(noop_port)]
    for label, argv, port in (("noop", noop, noop_port), ("cloud4iot", ours, ours_port)):
        with server(argv, port) as url:
            asyncio.run(drive(url, bodies, min(calls, 20), concurrency))  # warm-up
            start = time.perf_counter()
            lat = asyncio.run(drive(url, bodies, calls, concurrency))
            elapsed = time.perf_counter() - start
        lat.sort()
        out[label] = {
            "p50_ms": statistics.median(lat) * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
            "calls_per_s": len(lat) / elapsed,
            "calls": len(lat),
        }
    return out


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("--nodes", type=int, nargs="+", default=[100, 1000, 5000])
    p.add_argument("--mode", nargs="+", choices=["names", "full"], default=["names", "full"])
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yaml"
        # Load ages in the state file are relative to its load: keep them fresh all run.
        policy.write_text(
            (ROOT / "policies" / "default.yaml")
            .read_text()
            .replace("loadMaxAge: 30s", "loadMaxAge: 1h")
            .replace("sightingMaxAge: 30s", "sightingMaxAge: 1h")
        )
        print(
            "| nodes | mode | extender | calls | p50 ms | p99 ms | calls/s | p99 ratio | calls/s ratio |"
        )
        print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
        for n in args.nodes:
            for mode in args.mode:
                r = measure(n, mode, args.concurrency, policy, Path(tmp))
                base = r["noop"]
                for label in ("noop", "cloud4iot"):
                    m = r[label]
                    print(
                        f"| {n} | {mode} | {label} | {m['calls']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} "
                        f"| {m['calls_per_s']:.1f} | {m['p99_ms'] / base['p99_ms']:.2f}x "
                        f"| {m['calls_per_s'] / base['calls_per_s']:.2f}x |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
