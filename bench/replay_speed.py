"""How fast `cloud4iot replay` pushes adverts through the live chain (monitors, publish
plans, the nearest writer) on its virtual clock.

    python -m devcluster bench replay-speed --gateways 20 --devices 50 --minutes 60

Synthetic site: every gateway hears every device once a second (levels drift as a random
walk per pair, 4 dB noise per advert). Prints adverts, chain seconds and adverts/s; the
scoring (numpy) is not included.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import resource
import time

from cloud4iot.buildinfo import DEFAULT_POLICY
from cloud4iot.policy.loader import load_policy
from replay.chain import run_chain
from replay.inputs import Advert, Recording, synthetic_address


def site(gateways: int, devices: int, seconds: int, seed: int = 1) -> Recording:
    rng = random.Random(seed)
    names = [f"dev-{d:03d}" for d in range(devices)]
    gws = [f"gw-{g:02d}" for g in range(gateways)]
    level = {(d, g): rng.uniform(-90, -50) for d in names for g in gws}
    offset = {(d, g): rng.random() for d in names for g in gws}
    adverts: list[Advert] = []
    for second in range(seconds):
        for d in names:
            for g in gws:
                key = (d, g)
                level[key] = min(-40.0, max(-100.0, level[key] + rng.gauss(0, 0.5)))
                rssi = round(level[key] + rng.gauss(0, 4))
                adverts.append(Advert(second + offset[key], g, d, rssi))
    adverts.sort(key=lambda a: a.t)
    return Recording(adverts=adverts, addresses={d: synthetic_address(d) for d in names})


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--gateways", type=int, default=20)
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument(
        "--work",
        action="store_true",
        help="also CPU seconds and calls per advert (a second run under cProfile): "
        "comparable on a loaded machine, where the wall time is mostly waiting",
    )
    args = p.parse_args(argv)
    began = time.perf_counter()
    recording = site(args.gateways, args.devices, int(args.minutes * 60))
    built = time.perf_counter() - began
    policy = load_policy(DEFAULT_POLICY)
    cpu = time.process_time()
    result = asyncio.run(run_chain(recording, policy))
    cpu = time.process_time() - cpu
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    changes = sum(max(0, len(t) - 1) for t in result.decisions.values())
    print(
        f"{args.gateways} gateways x {args.devices} devices x {args.minutes:g} min: "
        f"{result.adverts} adverts through the chain in {result.seconds:.1f} s "
        f"({result.adverts / result.seconds:,.0f} adverts/s); {result.applies} applies, "
        f"{changes} nearest changes; generating the site took {built:.1f} s; max RSS {rss:.0f} MB"
    )
    if args.work:
        profile = cProfile.Profile()
        profile.runcall(asyncio.run, run_chain(recording, policy))
        calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
        print(
            f"CPU {cpu:.1f} s ({result.adverts / cpu:,.0f} adverts per CPU-s); "
            f"{calls:,} calls ({calls / result.adverts:.0f} per advert)"
        )


if __name__ == "__main__":
    main()
