"""Tiers: which tiers a class may use (confidentiality) and which it prefers per mode."""

from __future__ import annotations

from cloud4iot.policy.schema import FunctionClass, ProximityMode
from cloud4iot.vocabulary import TIER_LABEL
from extender.scoring.model import Code, Context, Refusal, refuse
from extender.state.snapshot import TIERS, NodeFacts


def tier_parts(cls: FunctionClass, mode: str | None) -> dict[str, float]:
    """Tier -> preference part for a mode: the first listed 1.0, the last 0.0."""
    order = [t.value for t in cls.preference_for(mode)]
    if len(order) == 1:
        return {order[0]: 1.0}
    return {tier: 1.0 - i / (len(order) - 1) for i, tier in enumerate(order)}


def gateway_needs_hearing(cls: FunctionClass) -> bool:
    # A gateway that does not hear the device is not "the gateway near it".
    return cls.proximity is not ProximityMode.IGNORED


def tier_refusal(tier: str | None) -> Refusal:
    if tier is None:
        return refuse(Code.NO_TIER, f"node has no {TIER_LABEL} label")
    if tier not in TIERS:
        return refuse(Code.NO_TIER, f"unknown tier {tier!r} (expected gateway, edge or cloud)")
    # Short on purpose: at thousands of nodes it is most of the answer's bytes.
    # The class is the pod's own (kubectl describe shows it beside this).
    return refuse(Code.TIER_NOT_ALLOWED, f"tier {tier} not allowed")


# The refusals of the tiers every cluster has, built once (hot path: thousands of nodes
# per request); an unknown tier label is rare and gets its own words each time.
TIER_REFUSALS = {tier: tier_refusal(tier) for tier in (None, *TIERS)}


class TierRule:
    name = "tier"

    def judge(self, ctx: Context, node: NodeFacts) -> Refusal | float:
        tier = node.tier
        if tier not in ctx.allowed_tiers:
            return TIER_REFUSALS.get(tier) or tier_refusal(tier)
        part = ctx.tier_part.get(tier or "", 0.0)
        if part and tier == "gateway" and ctx.gateway_needs_hearing and node.name not in ctx.heard:
            return 0.0
        return part
