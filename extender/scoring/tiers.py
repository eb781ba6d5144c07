"""Tiers: which tiers a class may use (confidentiality) and which it prefers per mode."""

from __future__ import annotations

from extender.policy.schema import FunctionClass, ProximityRule
from extender.scoring.model import Code, Context, Refusal
from extender.state.snapshot import TIERS, NodeFacts


def tier_parts(cls: FunctionClass, mode: str | None) -> dict[str, float]:
    """Tier -> preference part for a mode: the first listed 1.0, the last 0.0."""
    order = [t.value for t in cls.preference_for(mode)]
    if len(order) == 1:
        return {order[0]: 1.0}
    return {tier: 1.0 - i / (len(order) - 1) for i, tier in enumerate(order)}


def gateway_needs_hearing(cls: FunctionClass) -> bool:
    # A gateway that does not hear the device is not "the gateway near it".
    return cls.proximity is not ProximityRule.IGNORED


class TierRule:
    name = "tier"

    def check(self, ctx: Context, node: NodeFacts) -> Refusal | None:
        if node.tier in ctx.allowed_tiers:
            return None
        if node.tier is None:
            return Refusal(Code.NO_TIER, "node has no cloud4iot.io/tier label")
        if node.tier not in TIERS:
            return Refusal(
                Code.NO_TIER, f"unknown tier {node.tier!r} (expected gateway, edge or cloud)"
            )
        assert ctx.cls is not None
        allowed = ", ".join(t.value for t in ctx.cls.tiers)
        return Refusal(
            Code.TIER_NOT_ALLOWED,
            f"tier {node.tier} not allowed for class {ctx.pod.function} (allowed: {allowed})",
        )

    def part(self, ctx: Context, node: NodeFacts) -> float:
        part = ctx.tier_part.get(node.tier or "", 0.0)
        if (
            part
            and node.tier == "gateway"
            and ctx.gateway_needs_hearing
            and node.name not in ctx.heard
        ):
            return 0.0
        return part
