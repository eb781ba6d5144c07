"""CPU time of one full rebalancer plan: P pods of a confidential class on their
gateways, each device heard by its gateway, over a world of N nodes (1/10 gateways,
3/10 edge, the rest cloud). Nothing moves; the plan still asks the scorer about
every pod on every node, which is what the per-world tables make cheap.

    python -m devcluster bench rebalancer-plan [--pods 2000] [--nodes 2000]
"""

from __future__ import annotations

import argparse
import time

from extender.scoring import TableCache
from tests.rebalancer.test_rebalance_plan import Memory, P, T, plan, pod, wearable, world


def measure(pods: int, nodes: int) -> tuple[float, int]:
    gateways = {f"gw-{g:05d}": "gateway" for g in range(max(1, nodes // 10))}
    tiers = (
        gateways
        | {f"edge-{e:05d}": "edge" for e in range(nodes * 3 // 10)}
        | {f"cloud-{c:05d}": "cloud" for c in range(nodes - len(gateways) - nodes * 3 // 10)}
    )
    names = sorted(gateways)
    devices, fns = [], []
    for i in range(pods):
        home = names[i % len(names)]
        devices.append(wearable(f"d{i}", T, {home: -60.0}, home, T - 3600))
        fns.append(pod(f"p{i:05d}", home, device=f"d{i}"))
    snap = world(T, devices, nodes=tiers)
    started = time.process_time()
    result = plan(fns, snap, P, Memory(), T, tables=TableCache())
    return time.process_time() - started, len(result.moves)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("--pods", type=int, default=2000)
    p.add_argument("--nodes", type=int, default=2000)
    args = p.parse_args(argv)
    seconds, moves = measure(args.pods, args.nodes)
    print(f"{args.pods} pods x {args.nodes} nodes: full plan {seconds:.2f} s CPU, {moves} moves")


if __name__ == "__main__":
    main()
