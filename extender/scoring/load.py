"""Load: refuse nodes over the class's hard limits; prefer headroom.

Stale or missing Prometheus data follows the policy: fail open (no limit, a
neutral part) or fail closed (refused until fresh data arrives).
"""

from __future__ import annotations

from extender.policy.schema import StaleRule
from extender.scoring.model import Code, Context, Refusal
from extender.state.snapshot import LoadSample, NodeFacts

NEUTRAL = 0.5


def fresh_sample(ctx: Context, node: NodeFacts) -> LoadSample | None:
    sample = ctx.snapshot.load.get(node.name)
    if sample is None or ctx.now - sample.at > ctx.load_max_age:
        return None
    return sample


class LoadRule:
    name = "load"

    def check(self, ctx: Context, node: NodeFacts) -> Refusal | None:
        assert ctx.cls is not None
        sample = fresh_sample(ctx, node)
        if sample is None:
            if ctx.policy.spec.stale_data.on_stale_load is StaleRule.FAIL_CLOSED:
                known = ctx.snapshot.load.get(node.name)
                why = (
                    "no load data for the node"
                    if known is None
                    else f"load data is {ctx.now - known.at:.0f}s old"
                )
                return Refusal(Code.STALE_LOAD, f"{why} (policy: failClosed)")
            return None
        limits = ctx.cls.load_limits
        for what, value, limit in (
            ("cpu", sample.cpu, limits.cpu),
            ("memory", sample.memory, limits.memory),
        ):
            if value is not None and limit is not None and value > limit:
                return Refusal(
                    Code.OVERLOADED,
                    f"{what} {value:.0%} above the limit {limit:.0%} of class {ctx.pod.function}",
                )
        return None

    def part(self, ctx: Context, node: NodeFacts) -> float:
        sample = fresh_sample(ctx, node)
        peak = sample.peak if sample is not None else None
        return NEUTRAL if peak is None else max(0.0, 1.0 - peak)
