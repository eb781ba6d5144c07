"""THE scorer: the one place where placement is decided.

`evaluate` is a pure function of (pod, candidate nodes, snapshot, policy, now);
`evaluate_names` answers for a list of node names (the webhook's NodeNames mode),
including names the node cache does not know. The webhook, the explain endpoint,
the simulator and the rebalancer all call these; no verdict is built elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from extender.policy.schema import PlacementPolicy, ProximityMode
from extender.scoring.arch import check_arch
from extender.scoring.load import LoadRule
from extender.scoring.model import Code, Context, PodFacts, Refusal, Verdict, refuse
from extender.scoring.nearest import nearest_of
from extender.scoring.proximity import ProximityRule, heard_by, narrow
from extender.scoring.rules import Rule
from extender.scoring.tiers import TierRule, gateway_needs_hearing, tier_parts
from extender.state.snapshot import NodeFacts, Snapshot

MAX_SCORE = 10

# The one rule list. Order matters only for which reason is shown: the permanent
# ones come first. Each rule's weight is the class's `weights.<rule.name>`.
RULES: tuple[Rule, ...] = (TierRule(), ProximityRule(), LoadRule())
NO_PARTS: Mapping[str, float] = MappingProxyType({})


def make_context(
    pod: PodFacts, snapshot: Snapshot, policy: PlacementPolicy, now: float, explain: bool = False
) -> Context:
    cls = policy.spec.classes.get(pod.function) if pod.function else None
    device = snapshot.devices.get(pod.device) if pod.device else None
    heard: dict[str, float] = {}
    nearest = None
    if cls is not None and device is not None and cls.proximity is not ProximityMode.IGNORED:
        heard = heard_by(device, cls, policy.spec, snapshot, now)
        nearest = nearest_of(device, heard, policy.spec)
    weights = tuple(getattr(cls.weights, rule.name) for rule in RULES) if cls else ()
    return Context(
        weights=weights,
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
            return Verdict(node.name, True, 0, Code.UNMANAGED, UNMANAGED_REASON)
        return _refused(
            node.name,
            refuse(
                Code.UNKNOWN_CLASS,
                f"function class {ctx.pod.function!r} is not defined in policy "
                f"{ctx.policy.metadata.name}",
            ),
        )
    total = 0.0
    parts: dict[str, float] | None = {} if ctx.explain else None
    for rule, weight in zip(RULES, ctx.weights, strict=True):
        outcome = rule.judge(ctx, node)
        if isinstance(outcome, Refusal):
            return _refused(node.name, outcome)
        total += weight * outcome
        if parts is not None:
            parts[rule.name] = outcome
    score = int(MAX_SCORE * total / sum(ctx.weights) + 0.5)
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


UNKNOWN_NODE = refuse(Code.UNKNOWN_NODE, "node not (yet) in the extender's node cache")
UNMANAGED_REASON = "pod names no function class"


def evaluate_names(
    pod: PodFacts | Mapping[str, Any],
    names: Sequence[str],
    known: Mapping[str, NodeFacts],
    snapshot: Snapshot,
    policy: PlacementPolicy,
    now: float,
    explain: bool = False,
) -> list[Verdict]:
    """Verdicts for exactly `names`, in their order; `known` resolves names to facts.

    A name `known` lacks is refused as transient (the cache may not have it yet),
    except for an unmanaged, architecture-agnostic pod, which needs no node facts.
    """
    facts = pod if isinstance(pod, PodFacts) else PodFacts.from_pod(pod)
    if facts.function is None and not facts.archs:
        return [Verdict(n, True, 0, Code.UNMANAGED, UNMANAGED_REASON) for n in names]
    found = [known[n] for n in names if n in known]
    by_name = {v.node: v for v in evaluate(facts, found, snapshot, policy, now, explain)}
    return [by_name.get(n) or _refused(n, UNKNOWN_NODE) for n in names]
