"""What a gateway's Lease renewal costs the extender at hospital scale.

    python -m bench.lease_renewal_cost [--gateways 200] [--devices 10000]

A renewal moves the freshness of every entry of that gateway's report
(extender/state/reports.py `SightingIndex.observe_lease`): each of its devices gets new
DeviceFacts, the Devices are published (a copy of the merged map), and the elected
nearest writer decides those devices again at its next pass. This times the three on a
world like the hospital bench's (each device heard by its gateway and two neighbours,
~150 entries a report), in-process, no cluster, so the question "should liveness be kept
apart from the entries' lastSeen in every reader?" is answered by numbers.
"""

from __future__ import annotations

import argparse
import time

from cloud4iot.policy.loader import load_policy
from extender.controllers.nearest_plan import plan_nearest
from extender.state.liveness import LeaseFacts
from extender.state.reports import SightingIndex, report_facts
from tests.state.test_sighting_index import T, device, lease, node, report

RENEW_S = 10.0  # the monitors' Lease renewal period


def world(gateways: int, devices: int) -> SightingIndex:
    idx = SightingIndex()
    idx.set_nodes({f"gw-{g}": node(f"gw-{g}", True) for g in range(gateways)})
    for d in range(devices):
        idx.observe_device(f"dev-{d}", None, device(f"dev-{d}"))
    per = devices / gateways
    for g in range(gateways):
        heard = {f"dev-{d}": -60 - d % 7 for d in range(devices) if abs(int(d / per) - g) <= 1}
        idx.observe_report(f"gw-{g}", None, report_facts(report(f"gw-{g}", heard, at=T)))
    return idx


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gateways", type=int, default=200)
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    idx = world(args.gateways, args.devices)
    entries = sum(len(r.sightings) for r in idx.reports.values()) / args.gateways
    held: dict[str, LeaseFacts | None] = {f"gw-{g}": None for g in range(args.gateways)}
    for name in held:  # a Lease seen first: not timed
        held[name] = lease(name, "renew-0", T)
        idx.observe_lease(name, None, held[name])
    renewals, touched, spent = 0, 0, 0.0
    for r in range(1, args.rounds + 1):
        for name in held:
            new = lease(name, f"renew-{r}", T + RENEW_S * r)
            before = idx.merged.copy()
            began = time.perf_counter()
            idx.observe_lease(name, held[name], new)
            published = dict(idx.merged)  # what each publish copies
            spent += time.perf_counter() - began
            held[name] = new
            touched += sum(1 for k, v in published.items() if before.get(k) is not v)
            renewals += 1
    index_s = spent / renewals
    spec = load_policy("policies/default.yaml").policy.spec
    names = list(idx.merged)
    now = T + RENEW_S * (args.rounds + 1)
    states = dict(plan_nearest(idx.merged, names, {}, {}, now, spec).states)
    began = time.perf_counter()
    plan_nearest(idx.merged, names, states, {}, now + 0.5, spec)
    decide_s = (time.perf_counter() - began) / len(names)
    rate = args.gateways / RENEW_S
    per_renewal = touched / renewals
    cores = rate * (index_s + per_renewal * decide_s)
    print(
        f"{args.gateways} gateways x {args.devices} devices, {entries:.0f} entries a report:"
        f" a renewal changes {per_renewal:.0f} devices' facts; index + publish"
        f" {index_s * 1e3:.2f} ms, their decisions {per_renewal * decide_s * 1e3:.2f} ms"
        f" ({decide_s * 1e6:.1f} us a device); at {rate:.0f} renewals/s: {cores:.3f} cores"
    )


if __name__ == "__main__":
    main()
