"""THE scorer: the one place where placement is decided.

`evaluate` is a pure function of (pod, candidate nodes, snapshot, policy, now).
The webhook, the explain endpoint, the simulator and the rebalancer all call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from extender.policy.schema import PlacementPolicy
from extender.scoring.arch import check_arch
from extender.scoring.load import LoadRule
from extender.scoring.model import Code, Context, PodFacts, Refusal, Verdict
from extender.scoring.proximity import ProximityRuleImpl, heard_by, narrow, nearest_of
from extender.scoring.rules import Rule
from extender.scoring.tiers import TierRule, gateway_needs_hearing, tier_parts
from extender.state.snapshot import NodeFacts, Snapshot

MAX_SCORE = 10

# Order matters only for which reason is shown: the permanent ones come first.
RULES: tuple[Rule, ...] = (TierRule(), ProximityRuleImpl(), LoadRule())


def make_context(pod: PodFacts, snapshot: Snapshot, policy: PlacementPolicy, now: float) -> Context:
    cls = policy.spec.classes.get(pod.function) if pod.function else None
    device = snapshot.devices.get(pod.device) if pod.device else None
    heard: dict[str, float] = {}
    nearest = None
    if cls is not None and device is not None:
        heard = heard_by(device, cls, policy.spec.stale_data, now)
        nearest = nearest_of(device, heard)
    return Context(
        allowed_tiers=frozenset(t.value for t in cls.tiers) if cls else frozenset(),
        tier_part=tier_parts(cls, pod.mode) if cls else {},
        gateway_needs_hearing=gateway_needs_hearing(cls) if cls else False,
        load_max_age=policy.spec.stale_data.load_max_age,
        pod=pod,
        cls=cls,
        snapshot=snapshot,
        policy=policy,
        now=now,
        device=device,
        heard=heard,
        nearest=nearest,
    )


def _refused(node: str, refusal: Refusal) -> Verdict:
    return Verdict(
        node=node,
        feasible=False,
        score=0,
        code=refusal.code,
        reason=refusal.reason,
        unresolvable=refusal.unresolvable,
    )


def judge(ctx: Context, node: NodeFacts) -> Verdict:
    """One node on its own: the hard rules, then the weighted score."""
    refusal = check_arch(ctx.pod, node)
    if refusal is not None:
        return _refused(node.name, refusal)
    cls = ctx.cls
    if cls is None:
        if ctx.pod.function is None:
            return Verdict(node.name, True, 0, Code.UNMANAGED, "pod names no function class")
        return _refused(
            node.name,
            Refusal(
                Code.UNKNOWN_CLASS,
                f"function class {ctx.pod.function!r} is not defined in policy "
                f"{ctx.policy.metadata.name}",
            ),
        )
    for rule in RULES:
        refusal = rule.check(ctx, node)
        if refusal is not None:
            return _refused(node.name, refusal)
    w = cls.weights
    parts = {rule.name: rule.part(ctx, node) for rule in RULES}
    total = w.tier * parts["tier"] + w.proximity * parts["proximity"] + w.load * parts["load"]
    score = int(MAX_SCORE * total / (w.tier + w.proximity + w.load) + 0.5)
    return Verdict(node.name, True, score, Code.KEPT, "feasible", parts=parts)


def evaluate(
    pod: PodFacts | Mapping[str, Any],
    nodes: Iterable[NodeFacts],
    snapshot: Snapshot,
    policy: PlacementPolicy,
    now: float,
) -> list[Verdict]:
    """Verdicts for every candidate, in input order."""
    facts = pod if isinstance(pod, PodFacts) else PodFacts.from_pod(pod)
    ctx = make_context(facts, snapshot, policy, now)
    candidates = list(nodes)
    verdicts = [judge(ctx, node) for node in candidates]
    feasible = [n for n, v in zip(candidates, verdicts, strict=True) if v.feasible]
    yielding = narrow(ctx, feasible)
    if yielding:
        verdicts = [
            _refused(v.node, yielding[v.node]) if v.node in yielding else v for v in verdicts
        ]
    return verdicts


def unknown_node(name: str) -> Verdict:
    """A NodeNames-mode name the extender's node cache has never seen."""
    return _refused(
        name,
        Refusal(Code.UNKNOWN_NODE, "node not (yet) in the extender's node cache"),
    )
