"""THE scorer: the one place where placement is decided.

`evaluate` is a pure function of (pod, candidate nodes, snapshot, policy, now).
The webhook, the explain endpoint, the simulator and the rebalancer all call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from extender.policy.schema import PlacementPolicy, ProximityRule
from extender.scoring.arch import check_arch
from extender.scoring.load import LoadRule
from extender.scoring.model import Code, Context, PodFacts, Refusal, Verdict, refuse
from extender.scoring.proximity import ProximityRuleImpl, heard_by, narrow, nearest_of
from extender.scoring.rules import Rule
from extender.scoring.tiers import TierRule, gateway_needs_hearing, tier_parts
from extender.state.snapshot import NodeFacts, Snapshot

MAX_SCORE = 10

# Order matters only for which reason is shown: the permanent ones come first.
TIER, PROXIMITY, LOAD = TierRule(), ProximityRuleImpl(), LoadRule()
RULES: tuple[Rule, ...] = (TIER, PROXIMITY, LOAD)
NO_PARTS: Mapping[str, float] = MappingProxyType({})


def make_context(
    pod: PodFacts, snapshot: Snapshot, policy: PlacementPolicy, now: float, explain: bool = False
) -> Context:
    cls = policy.spec.classes.get(pod.function) if pod.function else None
    device = snapshot.devices.get(pod.device) if pod.device else None
    heard: dict[str, float] = {}
    nearest = None
    if cls is not None and device is not None and cls.proximity is not ProximityRule.IGNORED:
        heard = heard_by(device, cls, policy.spec, snapshot, now)
        nearest = nearest_of(device, heard, policy.spec)
    return Context(
        allowed_tiers=frozenset(t.value for t in cls.tiers) if cls else frozenset(),
        tier_part=tier_parts(cls, pod.mode) if cls else {},
        gateway_needs_hearing=gateway_needs_hearing(cls) if cls else False,
        load_max_age=policy.spec.stale_data.load_max_age,
        explain=explain,
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
    return Verdict(node, False, 0, refusal.code, refusal.reason, refusal.unresolvable)


def judge(ctx: Context, node: NodeFacts) -> Verdict:
    """One node on its own: each rule refuses it or scores it, then the weighted mean."""
    if ctx.pod.archs:
        refusal = check_arch(ctx.pod, node)
        if refusal is not None:
            return _refused(node.name, refusal)
    cls = ctx.cls
    if cls is None:
        if ctx.pod.function is None:
            return Verdict(node.name, True, 0, Code.UNMANAGED, "pod names no function class")
        return _refused(
            node.name,
            refuse(
                Code.UNKNOWN_CLASS,
                f"function class {ctx.pod.function!r} is not defined in policy "
                f"{ctx.policy.metadata.name}",
            ),
        )
    w = cls.weights
    total = 0.0
    parts: dict[str, float] | None = {} if ctx.explain else None
    for rule, weight in ((TIER, w.tier), (PROXIMITY, w.proximity), (LOAD, w.load)):
        outcome = rule.judge(ctx, node)
        if isinstance(outcome, Refusal):
            return _refused(node.name, outcome)
        total += weight * outcome
        if parts is not None:
            parts[rule.name] = outcome
    score = int(MAX_SCORE * total / (w.tier + w.proximity + w.load) + 0.5)
    return Verdict(node.name, True, score, Code.KEPT, "feasible", False, parts or NO_PARTS)


def evaluate(
    pod: PodFacts | Mapping[str, Any],
    nodes: Iterable[NodeFacts],
    snapshot: Snapshot,
    policy: PlacementPolicy,
    now: float,
    explain: bool = False,
) -> list[Verdict]:
    """Verdicts for every candidate, in input order; `explain` adds score parts."""
    facts = pod if isinstance(pod, PodFacts) else PodFacts.from_pod(pod)
    ctx = make_context(facts, snapshot, policy, now, explain)
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
        refuse(Code.UNKNOWN_NODE, "node not (yet) in the extender's node cache"),
    )
