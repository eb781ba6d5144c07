"""Tiers: which tiers a class may use (confidentiality) and which it prefers per mode."""

from __future__ import annotations

from extender.policy.schema import ProximityRule, Tier
from extender.scoring.model import Code, Context, Refusal
from extender.state.snapshot import TIERS, NodeFacts


class TierRule:
    name = "tier"

    def check(self, ctx: Context, node: NodeFacts) -> Refusal | None:
        assert ctx.cls is not None
        if node.tier is None:
            return Refusal(Code.NO_TIER, "node has no cloud4iot.io/tier label")
        if node.tier not in TIERS:
            return Refusal(
                Code.NO_TIER, f"unknown tier {node.tier!r} (expected gateway, edge or cloud)"
            )
        if Tier(node.tier) not in ctx.cls.tiers:
            allowed = ", ".join(t.value for t in ctx.cls.tiers)
            return Refusal(
                Code.TIER_NOT_ALLOWED,
                f"tier {node.tier} not allowed for class {ctx.pod.function} (allowed: {allowed})",
            )
        return None

    def part(self, ctx: Context, node: NodeFacts) -> float:
        assert ctx.cls is not None
        order = ctx.cls.preference_for(ctx.pod.mode)
        tier = Tier(node.tier) if node.tier in TIERS else None
        if tier is None or tier not in order:
            return 0.0
        # A gateway that does not hear the device is not "the gateway near it".
        if (
            tier is Tier.GATEWAY
            and ctx.cls.proximity is not ProximityRule.IGNORED
            and node.name not in ctx.heard
        ):
            return 0.0
        if len(order) == 1:
            return 1.0
        return 1.0 - order.index(tier) / (len(order) - 1)
