"""Admission narrowing: pin a new pod to its best few nodes, chosen by our scorer.

Why: kube-scheduler runs its own filters and scores on every node it considers and
sends all of them to the extender. Scoring every node of a 5,000-node cluster for
every pod (so that the gateway hearing a device is never sampled out) bounds the
scheduler at a fraction of its throughput. A pod whose required node affinity
names nodes by `metadata.name` is different: kube-scheduler's NodeAffinity
PreFilter hands back exactly those nodes, and filters, scores and calls the
extender for those only. So at CREATE the admission webhook asks the same scorer
the extender uses for the pod's verdict on every known node, and pins the pod to
the best K: its required node affinity becomes one term per chosen node, the pod's
own terms ANDed with `metadata.name In [that node]` (the apiserver allows one
value per metadata.name requirement).

What is chosen: the nodes the extender would keep now (the proximity rule
included), that kube-scheduler's label and taint filters would also admit
(fit.py), best score first; ties at the cut are drawn at random so that pods of
one class spread over equally good nodes instead of piling onto the same K.

What is not narrowed (the pod is admitted unchanged, and the scheduler and
extender place it as before):
- pods of another scheduler, already bound, or pinned by name already (DaemonSet);
- pods naming no class, or a class the policy lacks: nothing to rank them by;
- while the extender's caches have not synced;
- when no node is feasible now (a device nobody hears, everything overloaded):
  the pod waits in the scheduler's queue and is retried on cluster events, which a
  pin taken now would defeat;
- constraints fit.py cannot evaluate exactly.

Limits, by design: the pin is taken once. Resource requests are not checked (the
extender does not track them), so if all K nodes are full the pod waits for one of
them; K (32 by default) makes that unlikely, and the rebalancer's recreation of
pods is what refreshes a stale pin. Running pods are unaffected
(IgnoredDuringExecution).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from extender.admission.fit import PodConstraints, UnsupportedError
from extender.policy.schema import PlacementPolicy
from extender.scoring import PodFacts, Verdict, evaluate_known
from extender.state.snapshot import Snapshot
from extender.state.workloads import SCHEDULER_NAME

DEFAULT_CANDIDATES = 32
NARROWED_ANNOTATION = "cloud4iot.io/narrowed"
_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


@dataclass(frozen=True, slots=True)
class Narrowed:
    nodes: tuple[str, ...]  # best first
    feasible: int  # how many nodes were feasible and admissible in all


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str


def choose(
    verdicts: Sequence[Verdict], admits: Any, k: int, rng: random.Random
) -> tuple[tuple[str, ...], int]:
    """The best `k` feasible, admitted nodes (best first, ties at the cut at random)."""
    pool = [v for v in verdicts if v.feasible and admits(v.node)]
    rng.shuffle(pool)  # a stable sort of a shuffled pool: random order within a score
    pool.sort(key=lambda v: -v.score)
    return tuple(v.node for v in pool[:k]), len(pool)


def pinned_by_name(spec: Mapping[str, Any]) -> bool:
    """Whether a required term already selects nodes by metadata.name (DaemonSet pods)."""
    affinity = spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    required = node_affinity.get(_REQUIRED) if isinstance(node_affinity, Mapping) else None
    terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    return isinstance(terms, list) and any(
        isinstance(t, Mapping)
        and any(
            isinstance(f, Mapping) and f.get("key") == "metadata.name"
            for f in (t.get("matchFields") or [])
        )
        for t in terms
    )


def decide(
    pod: Mapping[str, Any],
    snapshot: Snapshot,
    policy: PlacementPolicy,
    now: float,
    k: int,
    rng: random.Random,
) -> Narrowed | Skipped:
    """Whether and where to pin `pod` (a Pod as a JSON dict). Pure but for `rng`."""
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return Skipped("the pod has no spec")
    if spec.get("schedulerName") != SCHEDULER_NAME:
        return Skipped(f"schedulerName is not {SCHEDULER_NAME}")
    if spec.get("nodeName"):
        return Skipped("the pod is already bound (spec.nodeName)")
    if k <= 0:
        return Skipped("narrowing is off")
    facts = PodFacts.from_pod(pod)
    if facts.function is None:
        return Skipped("the pod names no function class")
    if facts.function not in policy.spec.classes:
        return Skipped(f"function class {facts.function!r} is not in the policy")
    if not (snapshot.nodes_synced and snapshot.devices_synced):
        return Skipped("the extender's node and device caches have not synced")
    if pinned_by_name(spec):
        return Skipped("the pod already selects nodes by metadata.name")
    try:
        constraints = PodConstraints.from_spec(spec)
    except UnsupportedError as exc:
        return Skipped(f"constraint not evaluated here: {exc}")
    nodes = snapshot.nodes
    verdicts = evaluate_known(facts, snapshot, policy, now)
    chosen, feasible = choose(verdicts, lambda n: constraints.admits(nodes[n]), k, rng)
    if not chosen:
        return Skipped("no node is feasible now: left to the scheduler's retries")
    return Narrowed(chosen, feasible)


def _escape(key: str) -> str:
    """A JSON Pointer reference token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def affinity_patch(pod: Mapping[str, Any], narrowed: Narrowed) -> list[dict[str, Any]]:
    """JSON Patch operations pinning the pod to `narrowed.nodes`, and recording the pin
    in an annotation. Assumes `decide` accepted the pod.

    The apiserver's validation allows exactly one value in a `metadata.name`
    matchFields requirement, so the pin is one term per node: every required term
    (or none) ANDed with `metadata.name In [node]`. Terms are ORed, so the pod keeps
    exactly the chosen nodes its own terms admit, and kube-scheduler's NodeAffinity
    PreFilter, which unions the names of such terms, hands back only those nodes.
    """
    note = f"{len(narrowed.nodes)} of {narrowed.feasible} feasible nodes"
    spec, meta = pod["spec"], pod.get("metadata") or {}
    ops: list[dict[str, Any]] = []
    if isinstance(meta.get("annotations"), Mapping):
        path = "/metadata/annotations/" + _escape(NARROWED_ANNOTATION)
        ops.append({"op": "add", "path": path, "value": note})
    else:
        annotations = {NARROWED_ANNOTATION: note}
        ops.append({"op": "add", "path": "/metadata/annotations", "value": annotations})

    affinity = spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    required = node_affinity.get(_REQUIRED) if isinstance(node_affinity, Mapping) else None
    raw = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    # An empty term matches nothing: dropped rather than turned into a match by the pin.
    own = [t for t in raw or [] if t.get("matchExpressions") or t.get("matchFields")]
    terms = [
        {**term, "matchFields": [*(term.get("matchFields") or []), _name_in(node)]}
        for node in narrowed.nodes
        for term in own or [{}]
    ]
    pinned = {"nodeSelectorTerms": terms}
    if not isinstance(affinity, Mapping):
        whole = {"nodeAffinity": {_REQUIRED: pinned}}
        return [*ops, {"op": "add", "path": "/spec/affinity", "value": whole}]
    if not isinstance(node_affinity, Mapping):
        node = {_REQUIRED: pinned}
        return [*ops, {"op": "add", "path": "/spec/affinity/nodeAffinity", "value": node}]
    # "add" onto an existing member replaces it (RFC 6902, 4.1); preferred terms stay.
    base = f"/spec/affinity/nodeAffinity/{_REQUIRED}"
    return [*ops, {"op": "add", "path": base, "value": pinned}]


def _name_in(node: str) -> dict[str, Any]:
    return {"key": "metadata.name", "operator": "In", "values": [node]}
