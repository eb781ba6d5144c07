"""Admission narrowing: pin a new pod to its best few nodes, chosen by our scorer.

Why: kube-scheduler runs its own filters and scores on every node it considers and
sends all of them to the extender. Scoring every node of a 5,000-node cluster for
every pod (so that the gateway hearing a device is never sampled out) bounds the
scheduler at a fraction of its throughput. A pod whose required node affinity
names nodes by `metadata.name` is different: kube-scheduler's NodeAffinity
PreFilter hands back exactly those nodes, and filters, scores and calls the
extender for those only. So at CREATE the admission webhook asks the same scorer
the extender uses for the pod's verdict on every known node, and ANDs
"the node is one of the best K" into the pod's required node affinity (one
`metadata.name In [node]` term per node: the apiserver allows one value each).

What is chosen: the nodes the extender would keep now (the proximity rule
included), that kube-scheduler's label and taint filters would also admit
(fit.py) and that have room for the pod's requests as NodeResourcesFit counts
it (extender/state/resources.py: allocatable minus what the pods bound or
nominated there request, one more pod within `pods`), best score first;
ties at the cut are drawn at random so that pods of one class spread over
equally good nodes instead of piling onto the same K.

What is not narrowed (the pod is admitted unchanged, and the scheduler and
extender place it as before):
- pods of another scheduler, already bound, or pinned by name already (DaemonSet);
- pods annotated `cloud4iot.io/narrowing: "off"`;
- pods naming no class, or a class the policy lacks: nothing to rank them by;
- while the extender's caches have not synced;
- when no node is feasible now (a device nobody hears, everything overloaded),
  or no feasible node has room for its requests: the pod waits in the scheduler's
  queue and is retried on cluster events, which a pin taken now would defeat;
- constraints fit.py cannot evaluate exactly.

Limits, by design: the pin is taken once, on the room known then: pods created in
one burst all see the same free room (kube-scheduler's own assumed pods are not
visible here), so the K nodes can fill before the pod is bound; K (16 by default)
makes that unlikely, and the rebalancer's recreation of pods is what refreshes a
stale pin. A node reporting no allocatable is not checked. Running pods are unaffected
(IgnoredDuringExecution).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from cloud4iot.policy.schema import PlacementPolicy
from cloud4iot.vocabulary import (
    NARROWED_ANNOTATION,
    NARROWED_FROM_ANNOTATION,
    OPT_OUT_ANNOTATION,
    SCHEDULER_NAME,
)
from extender.admission.fit import PodConstraints, UnsupportedError
from extender.scoring import PodFacts, TableCache, evaluate
from extender.state.pods import REQUIRED, required_terms
from extender.state.resources import NO_USE, fits, pod_requests
from extender.state.snapshot import Snapshot

MAX_TERMS = 128  # required node-selector terms a pinned pod may end up with


@dataclass(frozen=True, slots=True)
class Narrowed:
    nodes: tuple[str, ...]  # best first
    feasible: int  # how many nodes the scorer found feasible in all
    # What it was chosen from, recorded on the pod (not part of the decision's identity):
    # the scorer's score per node of `nodes` (() = not kept), the pod's device and its
    # nearest gateway then.
    scores: tuple[int, ...] = field(default=(), compare=False)
    device: str | None = field(default=None, compare=False)
    nearest: str | None = field(default=None, compare=False)

    def record(self, nodes: Sequence[str]) -> str:
        """The NARROWED_FROM_ANNOTATION value for the pinned `nodes` (a prefix of
        `nodes`): bounded by the pin, which is bounded by MAX_TERMS."""
        score = dict(zip(self.nodes, self.scores, strict=False))
        doc = {
            "candidates": [[n, score.get(n)] for n in nodes],
            "device": self.device,
            "nearest": self.nearest,
        }
        return orjson.dumps(doc).decode()


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str
    # Bounded, for cloud4iot_extender_admissions_skipped_total{why}; the reason says it all.
    code: str = field(default="", compare=False)


def choose(
    ranking: Sequence[tuple[int, Sequence[str]]],
    admits: Callable[[str], bool],
    k: int,
    rng: random.Random,
) -> tuple[str, ...]:
    """The best `k` nodes of `ranking` (feasible nodes by score, best first) that
    `admits`: best score first, the nodes of one score in random order.

    Runs per pod creation over every node of the cluster: `admits` is asked only of the
    nodes looked at (typically only as many of the cut's score as are still needed),
    and the ranking's lists (shared by every pod of a kind) are never reordered.
    """
    chosen: list[str] = []
    for _, group in ranking:
        need = k - len(chosen)
        if need <= 0:
            break
        if len(group) > need:
            # A random sample first; the whole group shuffled only if some are refused.
            sample = [n for n in rng.sample(group, need) if admits(n)]
            if len(sample) == need:
                chosen += sample
                continue
        order = list(group)
        rng.shuffle(order)
        chosen += [n for n in order if admits(n)][:need]
    return tuple(chosen[:k])


def pinned_by_name(spec: Mapping[str, Any]) -> bool:
    """Whether a required term already selects nodes by metadata.name (DaemonSet pods)."""
    return any(
        isinstance(t, Mapping)
        and any(
            isinstance(f, Mapping) and f.get("key") == "metadata.name"
            for f in (t.get("matchFields") or [])
        )
        for t in required_terms(spec)
    )


def decide(
    pod: Mapping[str, Any],
    snapshot: Snapshot,
    policy: PlacementPolicy,
    now: float,
    k: int,
    rng: random.Random,
    tables: TableCache | None = None,
) -> Narrowed | Skipped:
    """Whether and where to pin `pod` (a Pod as a JSON dict). Pure but for `rng`
    (`tables` is the scorer's cache, memoization only)."""
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return Skipped("the pod has no spec", "no-spec")
    if spec.get("schedulerName") != SCHEDULER_NAME:
        return Skipped(f"schedulerName is not {SCHEDULER_NAME}", "other-scheduler")
    if spec.get("nodeName"):
        return Skipped("the pod is already bound (spec.nodeName)", "bound")
    if k <= 0:
        return Skipped("narrowing is off", "off")
    meta = pod.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    if isinstance(annotations, Mapping) and annotations.get(OPT_OUT_ANNOTATION) == "off":
        return Skipped(f'the pod opts out ({OPT_OUT_ANNOTATION}: "off")', "opted-out")
    facts = PodFacts.from_pod(pod)
    if facts.function is None:
        return Skipped("the pod names no function class", "no-class")
    if facts.function not in policy.spec.classes:
        return Skipped(f"function class {facts.function!r} is not in the policy", "unknown-class")
    if not (snapshot.nodes_synced and snapshot.devices_synced and snapshot.pods_synced):
        return Skipped("the extender's node, device and pod caches have not synced", "not-synced")
    if pinned_by_name(spec):
        return Skipped("the pod already selects nodes by metadata.name", "pinned")
    try:
        constraints = PodConstraints.from_spec(spec)
    except UnsupportedError as exc:
        return Skipped(f"constraint not evaluated here: {exc}", "unsupported")
    nodes, usage = snapshot.nodes, snapshot.usage
    requests = pod_requests(spec)

    def admits(name: str) -> bool:
        node = nodes[name]
        return constraints.admits(node) and fits(
            requests, node.allocatable, usage.get(name, NO_USE)
        )

    ranking, feasible = evaluate(facts, snapshot, policy, now, tables=tables).by_score()
    chosen = choose(ranking, admits, k, rng)
    if not chosen:
        if any(constraints.admits(nodes[n]) for _, group in ranking for n in group):
            why = "no feasible node has room for the pod's requests now: left to the scheduler"
            return Skipped(why, "no-room")
        why = "no node is feasible now: left to the scheduler's retries"
        return Skipped(why, "nothing-feasible")
    # The chosen nodes' scores, from the best groups only (not a dict of every node:
    # at 5,000 nodes that was a third of an admission's CPU).
    wanted, score = set(chosen), dict[str, int]()
    for s, group in ranking:
        if len(score) == len(wanted):
            break
        score.update(dict.fromkeys(wanted.intersection(group), s))
    device = snapshot.devices.get(facts.device) if facts.device else None
    nearest = device.nearest if device is not None else None
    return Narrowed(chosen, feasible, tuple(score[n] for n in chosen), facts.device, nearest)


def stale_pin(
    pod: PodFacts,
    pins: Sequence[str],
    snapshot: Snapshot,
    policy: PlacementPolicy,
    now: float,
    tables: TableCache | None = None,
) -> str | None:
    """Why a pending pod's pin is stale (None: it is not): none of its pinned nodes is
    feasible now while others are, so a fresh admission would pin it elsewhere. A pod
    nothing is feasible for stays as it is: a new pin would not help it."""
    if not pins:
        return None
    # What admission would see.
    ranking, _ = evaluate(pod, snapshot, policy, now, tables=tables).by_score()
    feasible = {n for _, group in ranking for n in group}
    if not feasible or not feasible.isdisjoint(pins):
        return None
    return (
        f"none of the {len(pins)} node(s) it was pinned to at creation is feasible now,"
        f" {len(feasible)} other node(s) are"
    )


def _escape(key: str) -> str:
    """A JSON Pointer reference token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def pinned_terms(terms: Sequence[Mapping[str, Any]], nodes: Sequence[str]) -> list[dict[str, Any]]:
    """`terms` (ORed; none = no required affinity yet) ANDed with "the node is one of
    `nodes`". The apiserver allows a single value per `metadata.name` requirement,
    so the pin is one term per node, each a copy of an original term:
    (t1 OR t2) AND (n1 OR n2) = (t1 AND n1) OR (t1 AND n2) OR (t2 AND n1) OR ...
    kube-scheduler's NodeAffinity PreFilter takes the union of the terms' names."""
    # An empty term matches nothing: dropped rather than turned into a match by the pin.
    own = [t for t in terms if t.get("matchExpressions") or t.get("matchFields")]
    base = own or [{}]
    return [
        {
            **term,
            "matchFields": [
                *(term.get("matchFields") or []),
                {"key": "metadata.name", "operator": "In", "values": [node]},
            ],
        }
        for term in base
        for node in nodes
    ]


def affinity_patch(pod: Mapping[str, Any], narrowed: Narrowed) -> list[dict[str, Any]]:
    """JSON Patch operations pinning the pod to `narrowed.nodes` (ANDed with its own
    required node affinity) and recording the pin in an annotation. Assumes `decide`
    accepted the pod."""
    spec, meta = pod["spec"], pod.get("metadata") or {}
    affinity = spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    terms = required_terms(spec)
    # Several terms of its own multiply the pin's terms: keep the product bounded
    # (the best nodes come first).
    nodes = narrowed.nodes[: max(1, MAX_TERMS // max(1, len(terms)))]
    note = f"{len(nodes)} of {narrowed.feasible} feasible nodes"
    ops: list[dict[str, Any]] = []
    notes = {NARROWED_ANNOTATION: note}
    if narrowed.scores:
        notes[NARROWED_FROM_ANNOTATION] = narrowed.record(nodes)
    if isinstance(meta.get("annotations"), Mapping):
        for key, value in notes.items():
            path = "/metadata/annotations/" + _escape(key)
            ops.append({"op": "add", "path": path, "value": value})
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": notes})

    pinned = {"nodeSelectorTerms": pinned_terms(terms, nodes)}
    if not isinstance(affinity, Mapping):
        whole = {"nodeAffinity": {REQUIRED: pinned}}
        return [*ops, {"op": "add", "path": "/spec/affinity", "value": whole}]
    if not isinstance(node_affinity, Mapping):
        node = {REQUIRED: pinned}
        return [*ops, {"op": "add", "path": "/spec/affinity/nodeAffinity", "value": node}]
    # "add" on an existing member replaces it: the whole required block at once.
    base = f"/spec/affinity/nodeAffinity/{REQUIRED}"
    return [*ops, {"op": "add", "path": base, "value": pinned}]
