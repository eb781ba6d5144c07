"""The sighting chain's own decision lag for the hospital walk, without an apiserver.

    python -m devcluster bench hospital-chain-lag [--walkers 200]

Per walker (bench/hospital_world.py: 1 m/s between two gateways 10 m apart, 4 dB noise,
10 % loss, one advert a second), on a virtual clock: per gateway the real ``Tracker``
and ``PublishPlan`` (Lease live), each report write applied at once, and the extender's
``decide_nearest`` (the shipped policy) every writer tick. The lag is from the midpoint
crossing to the decision naming the new gateway. Rows change one thing at a time, to
separate the publishing rules from the tracker and the policy's rule; the devcluster
bench (hospital-sightings) adds the apiserver, the watches and the writer's writes.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

from bench import hospital_world as hw
from cloud4iot.policy.loader import load_policy
from devcluster.cluster import DEFAULT_POLICY
from extender.controllers.nearest_writer import TICK
from extender.scoring.nearest import NearestState, decide_nearest
from extender.state.snapshot import Sighting as Entry
from gateway_monitor.publisher import PublishConfig, PublishPlan, Sighting
from gateway_monitor.tracker import Tracker

DT = 0.1


@dataclass(frozen=True)
class Row:
    name: str
    publish: PublishConfig
    tick: float = TICK  # the nearest writer's pass


ROWS = (
    Row("shipped: every 2 dB step, report_interval 2 s", PublishConfig()),
    Row(
        "steps < 6 dB held up to 10 s (before issue 19's tuning)",
        PublishConfig(coalesce=10.0),
    ),
    Row("report_interval 0", PublishConfig(report_interval=0.0)),
    Row(
        "every smoothed value reported at once",
        PublishConfig(step=1, urgent_step=1, min_interval=0.0, report_interval=0.0),
    ),
    Row(
        "... and the writer deciding every 0.1 s",
        PublishConfig(step=1, urgent_step=1, min_interval=0.0, report_interval=0.0),
        tick=0.1,
    ),
)


def lag_of_one(row: Row, rng: random.Random) -> float | None:
    spec = load_policy(DEFAULT_POLICY).policy.spec
    gws = hw.gateways(20, 20)
    home = gws[rng.randrange(1, 19)]
    x0 = home.x + rng.uniform(-hw.SPREAD, hw.SPREAD)
    leg = hw.Leg(60.0, x0, x0 + rng.choice((-1, 1)) * hw.SPACING)
    walker = hw.Wearable("d", "A", 0, x0, (leg,))
    move = hw.true_moves(walker, gws)[0]
    near = [g for g in gws if abs(g.x - home.x) <= 3 * hw.SPACING]
    trackers = {g.name: Tracker() for g in near}
    plans = {g.name: PublishPlan(row.publish) for g in near}
    for plan in plans.values():
        plan.set_live(True)
    reported: dict[str, int] = {}
    state: NearestState | None = None
    phase, next_tick = rng.random(), 0.0
    for step in range(int(120 / DT)):
        t = step * DT
        if (t + phase) % 1.0 < DT:
            x = walker.position(t)
            for g in near:
                d = abs(g.x - x)
                if d > hw.RANGE or rng.random() < 0.1:
                    continue
                rssi = round(hw.rssi_at(d) + rng.gauss(0.0, 4.0))
                link = trackers[g.name].observe("d", rssi, t).state
                if link.present and link.rssi is not None:
                    plans[g.name].want("d", Sighting(link.rssi, t))
        for g in near:
            plan = plans[g.name]
            if plan.due(t):
                listed = plan.report(t)
                plan.sent_report(listed, t)
                if "d" in listed:
                    reported[g.name] = listed["d"].rssi
                else:
                    reported.pop(g.name, None)
        if t >= next_tick:
            next_tick += row.tick
            entries = {n: Entry(n, r, t, True) for n, r in reported.items()}
            state = decide_nearest(state, entries, t, spec)
            if t > move.t and state.node == move.new:
                return t - move.t
    return None


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--walkers", type=int, default=200)
    args = parser.parse_args(argv)
    print("| chain | p50 s | p99 s | max s | not moved in 60 s |")
    print("|---|---:|---:|---:|---:|")
    for row in ROWS:
        rng = random.Random(1)
        lags = [lag_of_one(row, rng) for _ in range(args.walkers)]
        done = sorted(x for x in lags if x is not None)
        p50, p99 = hw.percentile(done, 0.5), hw.percentile(done, 0.99)
        print(
            f"| {row.name} | {p50:.1f} | {p99:.1f} | {done[-1]:.1f} |"
            f" {sum(1 for x in lags if x is None)} |"
        )
    rules = load_policy(DEFAULT_POLICY).policy.spec.nearest
    earliest = hw.evidence_time(rules.switch_cost_db_s, rules.deadband_db)
    print(f"\nthe evidence rule's earliest switch for this walk, noise-free: {earliest:.1f} s")


if __name__ == "__main__":
    main()
