"""Load: refuse nodes over the class's hard limits; prefer headroom.

Stale or missing Prometheus data follows the policy: fail open (no limit, a
neutral part) or fail closed (refused until fresh data arrives).
"""

from __future__ import annotations

from cloud4iot.policy.schema import StaleRule
from extender.scoring.model import Code, Context, Refusal, refuse
from extender.state.snapshot import NodeFacts

NEUTRAL = 0.5


class LoadRule:
    name = "load"

    def judge(self, ctx: Context, node: NodeFacts) -> Refusal | float:
        sample = ctx.snapshot.load.get(node.name)
        if sample is None or ctx.now - sample.at > ctx.load_max_age:
            if ctx.policy.spec.stale_data.on_stale_load is StaleRule.FAIL_CLOSED:
                # No age in the words: a verdict must not change while its world does not.
                why = (
                    "no load data for the node"
                    if sample is None
                    else f"load data older than {ctx.load_max_age:.0f}s"
                )
                return refuse(Code.STALE_LOAD, f"{why} (policy: failClosed)")
            return NEUTRAL
        assert ctx.cls is not None
        limits = ctx.cls.load_limits
        cpu, memory = sample.cpu, sample.memory
        if cpu is not None and limits.cpu is not None and cpu > limits.cpu:
            return self._over(ctx, "cpu", cpu, limits.cpu)
        if memory is not None and limits.memory is not None and memory > limits.memory:
            return self._over(ctx, "memory", memory, limits.memory)
        peak = sample.peak
        return NEUTRAL if peak is None else max(0.0, 1.0 - peak)

    @staticmethod
    def _over(ctx: Context, what: str, value: float, limit: float) -> Refusal:
        # Words, not "%": kube-scheduler passes our reasons on as a format string
        # somewhere on the way to its FailedScheduling Event ("97% above" printed as
        # "97%!a(MISSING)bove"), so no reason of ours may hold a bare percent sign.
        return refuse(
            Code.OVERLOADED,
            f"{what} {percent(value)} above the limit {percent(limit)} of class {ctx.pod.function}",
        )


def percent(fraction: float) -> str:
    """0.97 -> "97 percent" (a refusal reason's spelling of a load fraction)."""
    return f"{fraction * 100:.0f} percent"
