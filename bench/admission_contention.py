"""Admission latency with and without /filter + /prioritize load on the same extender.

Why: admission narrowing's /admit used to share the extender's event loop with the
scheduler's /filter and /prioritize, and pod creation bounded the scheduler path.
One extender per source tree (`--before TREE` for the old one; this tree after it,
alternated `--repeat` times), each serving a `bench.extender_pair` world of `--names`
nodes from a state file, /admit over HTTPS (a throwaway CA). Per extender: `--reviews`
AdmissionReviews (the pair bench's mix of confidential, engine-diagnostic intensive,
anonymiser and unmanaged pods) at `--admit-concurrency`, once alone and once while the
Go kube-scheduler-like client drives filter + prioritize pairs at `--concurrency`.
Reported: admission p50/p99/max and reviews/s, and the pairs/s the scheduler side got.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.extender_pair import (
    ROOT,
    bench_policy,
    build_go,
    ours_argv,
    plan,
    run_loadgen,
    serving,
    world,
)
from devcluster.certs import make_mtls_set
from devcluster.processes import free_port


def review(pod: dict[str, Any]) -> bytes:
    obj = json.loads(json.dumps(pod))
    obj["metadata"]["name"] = f"p-{uuid.uuid4().hex[:8]}"
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "object": obj,
            },
        }
    ).encode()


async def admissions(url: str, ca: Path, bodies: list[bytes], concurrency: int) -> dict[str, float]:
    """Send every body; latency per review (ms) and reviews/s."""
    context = ssl.create_default_context(cafile=str(ca))
    latencies: list[float] = []
    queue = list(reversed(bodies))
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                headers = {"Content-Type": "application/json"}
                async with session.post(url, data=body, headers=headers) as resp:
                    doc = await resp.json()
                    if resp.status != 200 or not doc["response"]["allowed"]:
                        raise SystemExit(f"/admit answered {resp.status}: {doc}")
                latencies.append(1000 * (time.perf_counter() - t0))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[int(0.99 * (len(latencies) - 1))],
        "max": latencies[-1],
        "per_s": len(latencies) / wall,
    }


def measure(tree: Path, args: argparse.Namespace, tmp: Path, loadgen: Path) -> dict[str, Any]:
    state, plan_file = tmp / "state.json", tmp / "plan.json"
    certs = make_mtls_set(tmp / "pki")
    port, admit_port = free_port(), free_port()
    argv = ours_argv(port, args.policy_file, state)
    argv += ["--admission-port", str(admit_port)]
    argv += ["--admission-cert", str(certs.server.cert), "--admission-key", str(certs.server.key)]
    cases = json.loads(plan_file.read_text())["Cases"]
    bodies = [review(cases[i % len(cases)]["Pod"]) for i in range(args.reviews)]
    url, admit_url = f"http://127.0.0.1:{port}", f"https://127.0.0.1:{admit_port}/admit"
    out: dict[str, Any] = {"tree": str(tree)}
    with serving(argv, url, tree=tree):
        asyncio.run(admissions(admit_url, certs.ca.cert, bodies[:50], 4))  # warm: TLS, tables
        out["alone"] = asyncio.run(
            admissions(admit_url, certs.ca.cert, bodies, args.admit_concurrency)
        )

        async def both() -> tuple[dict[str, float], dict[str, Any]]:
            pairs = asyncio.create_task(
                asyncio.to_thread(
                    run_loadgen, loadgen, url, plan_file, args.pairs, args.concurrency
                )
            )
            await asyncio.sleep(1.0)  # the scheduler side is under way
            admitted = await admissions(admit_url, certs.ca.cert, bodies, args.admit_concurrency)
            return admitted, await pairs

        out["loaded"], out["pairs"] = asyncio.run(both())
    return out


def cpu_per_admission(names: int, rounds: int = 100) -> None:
    """In-process CPU (process_time) of `narrow.decide` per pod kind, for the tree on
    PYTHONPATH: `PYTHONPATH=TREE python -m bench.admission_contention --cpu`."""
    import random

    from cloud4iot.policy.loader import load_policy
    from extender.admission.narrow import decide
    from extender.scoring import TableCache
    from extender.state.statefile import load_state

    with tempfile.TemporaryDirectory(prefix="admission-cpu-") as name:
        tmp = Path(name)
        w = world(names)
        (tmp / "state.json").write_text(json.dumps(w))
        snapshot, now = load_state(tmp / "state.json")
        policy = load_policy(bench_policy(tmp / "policy.yaml")).policy
    cases, tables, rng = plan(w)["Cases"], TableCache(), random.Random(0)
    for kind in ("confidential", "engine-intensive", "anonymiser", "unmanaged"):
        pods = [c["Pod"] for c in cases if c["Kind"] == kind]
        for pod in pods:  # the kind's table built
            decide(pod, snapshot, policy, now, 32, rng, tables)
        started = time.process_time()
        for _ in range(rounds):
            for pod in pods:
                decide(pod, snapshot, policy, now, 32, rng, tables)
        ms = 1000 * (time.process_time() - started) / (rounds * len(pods))
        print(f"| {names} | {kind} | {ms:.3f} |")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--names", type=int, default=5000)
    p.add_argument("--reviews", type=int, default=600)
    p.add_argument("--admit-concurrency", type=int, default=8)
    p.add_argument("--pairs", type=int, default=600, help="filter+prioritize pairs meanwhile")
    p.add_argument("--concurrency", type=int, default=4, help="pairs in flight")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--before", type=Path, help="another source tree, run alternately")
    p.add_argument("--cpu", action="store_true", help="only decide's CPU per pod kind, in-process")
    args = p.parse_args(argv)
    if args.cpu:
        cpu_per_admission(args.names)
        return
    loadgen = build_go()["loadgen"]
    trees = [t for t in (args.before, ROOT) if t is not None]
    rows = []
    with tempfile.TemporaryDirectory(prefix="admission-contention-") as name:
        tmp = Path(name)
        w = world(args.names)
        (tmp / "state.json").write_text(json.dumps(w))
        (tmp / "plan.json").write_text(json.dumps(plan(w)))
        args.policy_file = bench_policy(tmp / "policy.yaml")
        for _ in range(args.repeat):
            for tree in trees:
                rows.append(measure(tree, args, tmp, loadgen))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        "| tree | admission alone p50 / p99 / max ms | reviews/s"
        " | under filter load p50 / p99 / max ms | reviews/s | pairs/s meanwhile |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        a, b = r["alone"], r["loaded"]
        label = "this tree" if r["tree"] == str(ROOT) else r["tree"]
        print(
            f"| {label} | {a['p50']:.1f} / {a['p99']:.1f} / {a['max']:.1f} | {a['per_s']:.0f}"
            f" | {b['p50']:.1f} / {b['p99']:.1f} / {b['max']:.1f} | {b['per_s']:.0f}"
            f" | {r['pairs'].get('PairsPerSec', r['pairs'].get('pairs_per_s', 0)):.0f} |"
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
