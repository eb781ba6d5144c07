"""THE scorer: the one place where placement is decided.

Design notes (what "pure" means here):

- `judge(ctx, node)` decides one node. It reads only its arguments, the Context
  (`make_context`: pod, snapshot, policy, now) and the node's facts, and writes
  nothing: no memo on the frozen Snapshot or on the Context.
- `evaluate` is the one evaluation path: the context, a verdict per candidate, and
  the proximity narrowing across candidates (`_narrowing`, the only place it is
  worked out). The webhook's filter and prioritize (both node modes), /explain,
  `cloud4iot simulate`, admission narrowing and its stale-pin check, and the
  rebalancer's planner all call it; no verdict is built elsewhere. Its answer, an
  `Evaluation`, is read as verdicts for names (`verdicts`) or as the feasible nodes
  by score (`by_score`, admission): two views of the same verdicts and narrowing.
- Caching is explicit, keyed, and outside the decision: a caller that evaluates
  many pods against one world passes its `TableCache` (table.py), which holds per
  pod kind `judge`'s verdicts for the nodes without a sighting of the pod's device,
  checked against the objects they were computed from before it serves. The nodes
  that do have a sighting are judged for the request. Without a cache every
  candidate is judged; the answers are the same (tests/scoring/test_fast_path.py),
  and every entry point gives the same verdicts (tests/scoring/test_one_path.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from cloud4iot.policy.schema import PlacementPolicy, ProximityMode
from extender.scoring.arch import check_arch
from extender.scoring.load import LoadRule
from extender.scoring.model import Code, Context, PodFacts, Refusal, Verdict, refuse
from extender.scoring.nearest import nearest_of
from extender.scoring.proximity import ProximityRule, heard_by, narrow
from extender.scoring.rules import Rule
from extender.scoring.table import NodeTable, TableCache
from extender.scoring.tiers import TierRule, gateway_needs_hearing, tier_parts
from extender.state.snapshot import NodeFacts, Sighting, Snapshot

MAX_SCORE = 10

# The one rule list. Order matters only for which reason is shown: the permanent
# ones come first. Each rule's weight is the class's `weights.<rule.name>`.
RULES: tuple[Rule, ...] = (TierRule(), ProximityRule(), LoadRule())
NO_PARTS: Mapping[str, float] = MappingProxyType({})
NO_SIGHTINGS: Mapping[str, Sighting] = MappingProxyType({})
NO_VERDICTS: Mapping[str, Verdict] = MappingProxyType({})


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


UNKNOWN_NODE = refuse(Code.UNKNOWN_NODE, "node not (yet) in the extender's node cache")
UNMANAGED_REASON = "pod names no function class"

Ranking = list[tuple[int, list[str]]]  # feasible node names by score, best first


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One pod judged against its candidates: what every caller reads its answer from."""

    ctx: Context
    candidates: Collection[str]  # the names judged, in the request's order
    own: dict[str, Verdict]  # judged for this pod (never mutated once built)
    # From a TableCache: the verdicts of the nodes without a sighting of the pod's
    # device (`own` overrides them); None when every candidate was judged.
    table: NodeTable | None
    # Which feasible candidates stay and why the others yield (proximity `required`).
    narrowing: tuple[frozenset[str], Refusal] | None

    def verdicts(self, names: Iterable[str] | None = None) -> list[Verdict]:
        """Verdicts for `names` (default: the candidates), in their order.

        A name the node cache lacks is refused as transient (the cache may not have it
        yet), except for an unmanaged, architecture-agnostic pod, which needs no facts.
        """
        own, table = self.own, self.table
        if table is None:
            get = own.get
        else:
            # One C-speed copy, then one lookup a name.
            get = (table.verdicts | own).get if own else table.verdicts.get
        pod = self.ctx.pod
        unmanaged = pod.function is None and not pod.archs
        out = [
            get(n) or _unknown(n, unmanaged) for n in (self.candidates if names is None else names)
        ]
        if self.narrowing is None:
            return out
        stay, (code, reason, unresolvable) = self.narrowing
        return [
            v
            if not v.feasible or v.node in stay
            else _new(Verdict, (v.node, False, 0, code, reason, unresolvable, NO_PARTS))
            for v in out
        ]

    def by_score(self) -> tuple[Ranking, int]:
        """The feasible candidates grouped by score (best first) and how many they
        are, without a verdict per node: the table's ranking is shared by every pod of
        a kind, and only the nodes judged for this pod are merged into it."""
        own, table = self.own, self.table
        if self.narrowing is not None:
            groups: dict[int, list[str]] = {}
            for n in sorted(self.narrowing[0]):
                v = own.get(n) or (table.verdicts.get(n) if table is not None else None)
                if v is not None and v.feasible:
                    groups.setdefault(v.score, []).append(n)
            return _counted(groups.items())
        if table is None:
            groups = {}
            for n in self.candidates:
                if (v := own.get(n)) is not None and v.feasible:
                    groups.setdefault(v.score, []).append(n)
            return _counted(groups.items())
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
        return _counted(merged.items())


def evaluate(
    pod: PodFacts | Mapping[str, Any],
    snapshot: Snapshot,
    policy: PlacementPolicy,
    now: float,
    *,
    names: Sequence[str] | None = None,
    nodes: Iterable[NodeFacts] | None = None,
    explain: bool = False,
    tables: TableCache | None = None,
) -> Evaluation:
    """Judge a pod against its candidates: `nodes` (a full-Node request: their facts
    come with it), else `names` (resolved by the snapshot's node cache), else every
    node of the snapshot. `explain` adds score parts; `tables` is the caller's cache.
    """
    facts = pod if isinstance(pod, PodFacts) else PodFacts.from_pod(pod)
    ctx = make_context(facts, snapshot, policy, now, explain)
    table: NodeTable | None = None
    if nodes is not None:
        given = {node.name: node for node in nodes}
        facts_of: Mapping[str, NodeFacts] = given
        candidates: Collection[str] = given
        own = {name: judge(ctx, node) for name, node in given.items()}
    else:
        facts_of = known = snapshot.nodes
        candidates = known if names is None else names
        if tables is not None and not explain:  # table verdicts carry no score parts
            table = tables.table(ctx, judge, _background(ctx))
            # The nodes whose verdict the device changes: those with a sighting of it.
            own = {
                n: judge(ctx, node)
                for n in (ctx.device.sightings if ctx.device is not None else ())
                if (node := known.get(n)) is not None
            }
        elif names is None:
            own = {n: judge(ctx, node) for n, node in known.items()}
        else:
            own = {n: judge(ctx, node) for n in names if (node := known.get(n)) is not None}
    narrowing = _narrowing(ctx, candidates, facts_of, own, table)
    return Evaluation(ctx, candidates, own, table, narrowing)


def _narrowing(
    ctx: Context,
    candidates: Collection[str],
    facts_of: Mapping[str, NodeFacts],
    own: dict[str, Verdict],
    table: NodeTable | None,
) -> tuple[frozenset[str], Refusal] | None:
    """The proximity narrowing (proximity.narrow) over the feasible candidate gateways
    that hear the device: the one place every evaluation works it out."""
    cls = ctx.cls
    if not ctx.heard or cls is None or cls.proximity is not ProximityMode.REQUIRED:
        return None  # narrow() would answer None: skip the candidate set
    member = candidates if isinstance(candidates, Mapping) else frozenset(candidates)
    gateways = set()
    for n in ctx.heard:
        node = facts_of.get(n)
        if n not in member or node is None or node.tier != "gateway":
            continue
        v = own.get(n) or (table.verdicts.get(n) if table is not None else None)
        if v is not None and v.feasible:
            gateways.add(n)
    return narrow(ctx, gateways)


def _counted(groups: Iterable[tuple[int, list[str]]]) -> tuple[Ranking, int]:
    ranked = sorted(((s, ns) for s, ns in groups if ns), reverse=True)
    return ranked, sum(len(names) for _, names in ranked)


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
    )
