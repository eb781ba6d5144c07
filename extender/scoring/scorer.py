"""THE scorer: the one place where placement is decided.

`evaluate` is a pure function of (pod, candidate nodes, snapshot, policy, now);
`evaluate_names` answers for a list of node names (the webhook's NodeNames mode),
including names the node cache does not know. The webhook, the explain endpoint,
the simulator and the rebalancer all call these; no verdict is built elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from cloud4iot.policy.schema import PlacementPolicy, ProximityMode
from extender.scoring.arch import check_arch
from extender.scoring.load import LoadRule
from extender.scoring.model import Code, Context, PodFacts, Refusal, Verdict, refuse
from extender.scoring.nearest import nearest_of
from extender.scoring.proximity import ProximityRule, heard_by, narrow
from extender.scoring.rules import Rule
from extender.scoring.table import node_table
from extender.scoring.tiers import TierRule, gateway_needs_hearing, tier_parts
from extender.state.snapshot import NodeFacts, Sighting, Snapshot

MAX_SCORE = 10

# The one rule list. Order matters only for which reason is shown: the permanent
# ones come first. Each rule's weight is the class's `weights.<rule.name>`.
RULES: tuple[Rule, ...] = (TierRule(), ProximityRule(), LoadRule())
NO_PARTS: Mapping[str, float] = MappingProxyType({})
NO_SIGHTINGS: Mapping[str, Sighting] = MappingProxyType({})


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


_new = tuple.__new__  # builds a Verdict at C speed (its generated __new__ is Python)


def _refused(node: str, refusal: Refusal) -> Verdict:
    return _new(
        Verdict, (node, False, 0, refusal.code, refusal.reason, refusal.unresolvable, NO_PARTS)
    )


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
    gateways = {
        n.name
        for n, v in zip(candidates, verdicts, strict=True)
        if v.feasible and n.tier == "gateway"
    }
    return _narrowed(ctx, verdicts, gateways)


def _narrowed(ctx: Context, verdicts: list[Verdict], feasible_gateways: set[str]) -> list[Verdict]:
    """Apply the proximity narrowing (proximity.narrow) to a request's verdicts."""
    narrowed = narrow(ctx, feasible_gateways)
    if narrowed is None:
        return verdicts
    stay, (code, reason, unresolvable) = narrowed
    return [
        v
        if not v.feasible or v.node in stay
        else _new(Verdict, (v.node, False, 0, code, reason, unresolvable, NO_PARTS))
        for v in verdicts
    ]


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

    When `known` is the snapshot's own node map (the webhook, the rebalancer), the
    pod-independent verdicts come from the per-world table (table.py) and only the
    nodes that have a sighting of the pod's device are judged for this request.
    """
    facts = pod if isinstance(pod, PodFacts) else PodFacts.from_pod(pod)
    unmanaged = facts.function is None and not facts.archs
    if explain or known is not snapshot.nodes:
        found = [known[n] for n in names if n in known]
        by_name = {v.node: v for v in evaluate(facts, found, snapshot, policy, now, explain)}
        return [by_name.get(n) or _unknown(n, unmanaged) for n in names]

    ctx = make_context(facts, snapshot, policy, now)
    table = node_table(ctx, judge, _background(ctx)).verdicts
    # The nodes whose verdict the device changes: those with a sighting of it.
    own = {
        n: judge(ctx, node)
        for n in (ctx.device.sightings if ctx.device is not None else ())
        if (node := known.get(n)) is not None
    }
    get = (table | own).get if own else table.get  # one C-speed copy, then one lookup a name
    verdicts = [get(n) or _unknown(n, unmanaged) for n in names]
    if ctx.heard and ctx.cls is not None and ctx.cls.proximity is ProximityMode.REQUIRED:
        # Only gateways that hear the device decide the narrowing (heard_by keeps only
        # nodes the cache knows as gateways).
        gateways = {v.node for v in verdicts if v.feasible and v.node in ctx.heard}
        verdicts = _narrowed(ctx, verdicts, gateways)
    return verdicts


def evaluate_known(
    pod: PodFacts | Mapping[str, Any], snapshot: Snapshot, policy: PlacementPolicy, now: float
) -> list[Verdict]:
    """Verdicts for every node of the snapshot, in its order (the rebalancer's view)."""
    return evaluate_names(pod, tuple(snapshot.nodes), snapshot.nodes, snapshot, policy, now)


def feasible_by_score(
    pod: PodFacts | Mapping[str, Any], snapshot: Snapshot, policy: PlacementPolicy, now: float
) -> tuple[list[tuple[int, list[str]]], int]:
    """The nodes of the snapshot `evaluate_known` finds feasible, grouped by score (best
    first), and how many they are; without building a verdict per node.

    For admission narrowing, once per new pod: the table's ranking is shared by every
    pod of a kind; only the nodes with a sighting of the pod's device are re-judged,
    and the proximity narrowing, when it applies, leaves only its few nodes.
    `tests/scoring/test_fast_path.py` checks it against `evaluate_known`.
    """
    facts = pod if isinstance(pod, PodFacts) else PodFacts.from_pod(pod)
    known = snapshot.nodes
    ctx = make_context(facts, snapshot, policy, now)
    table = node_table(ctx, judge, _background(ctx))
    own = {
        n: judge(ctx, node)
        for n in (ctx.device.sightings if ctx.device is not None else ())
        if (node := known.get(n)) is not None
    }
    if ctx.heard and ctx.cls is not None and ctx.cls.proximity is ProximityMode.REQUIRED:
        gateways = {n for n in ctx.heard if (v := own.get(n)) is not None and v.feasible}
        narrowed = narrow(ctx, gateways)
        if narrowed is not None:
            groups: dict[int, list[str]] = {}
            for n in sorted(narrowed[0]):
                v = own.get(n) or table.verdicts.get(n)
                if v is not None and v.feasible:
                    groups.setdefault(v.score, []).append(n)
            return sorted(groups.items(), reverse=True), sum(map(len, groups.values()))
    ranking = table.ranking()
    if not own:
        return ranking, sum(len(names) for _, names in ranking)
    extra: dict[int, list[str]] = {}
    for n, v in own.items():
        if v.feasible:
            extra.setdefault(v.score, []).append(n)
    # Only the table's groups that hold a re-judged node are copied without it.
    table_verdicts = table.verdicts
    touched = {v.score for n in own if (v := table_verdicts.get(n)) is not None and v.feasible}
    merged = {
        score: [n for n in names if n not in own] if score in touched else names
        for score, names in ranking
    }
    for score, names in extra.items():
        merged[score] = [*merged.get(score, ()), *names]  # a copy: never the table's list
    groups_out = sorted(((s, ns) for s, ns in merged.items() if ns), reverse=True)
    return groups_out, sum(len(names) for _, names in groups_out)


def _unknown(name: str, unmanaged: bool) -> Verdict:
    if unmanaged:
        return Verdict(name, True, 0, Code.UNMANAGED, UNMANAGED_REASON)
    return _refused(name, UNKNOWN_NODE)


def _background(ctx: Context) -> Context:
    """`ctx` as nodes that never reported the device see it: nothing heard, no sightings."""
    device = ctx.device
    if device is None:
        return ctx
    return replace(
        ctx,
        device=replace(device, sightings=NO_SIGHTINGS),
        heard=NO_PARTS,
        nearest=None,
        tier_refusals={},
    )
