"""Which nodes kube-scheduler's label and taint filters would let a pod onto.

Admission narrowing (narrow.py) pins a pod to a few nodes; a pin onto nodes the
scheduler refuses for the pod's own constraints would strand it. So candidates are
first checked the way kube-scheduler's NodeAffinity (nodeSelector and required
node affinity), TaintToleration and NodeUnschedulable filters check them. Anything
this module does not understand raises `UnsupportedError`: the pod is then not narrowed
at all, never narrowed wrongly.

Resource fit is checked beside this, in extender/state/resources.py.
Constraints that depend on other pods or on volumes (required pod
(anti-)affinity, DoNotSchedule topology spread, hostPorts, claimed and in-tree disk
volumes, resource claims) are not evaluated either: they raise `UnsupportedError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from extender.state.pods import required_node_affinity
from extender.state.snapshot import NodeFacts

UNSCHEDULABLE_TAINT = ("node.kubernetes.io/unschedulable", "", "NoSchedule")


# Volumes kube-scheduler's volume plugins (1.36) filter nodes on: claims (binding,
# zone, attach limits), in-tree disks counted against a node's attach limit through
# CSI migration (NodeVolumeLimits), and disks refused beside the same disk on one node
# (VolumeRestrictions). An inline `csi` volume is none of these: no plugin filters on it.
NODE_BOUND_VOLUMES = frozenset(
    {
        "persistentVolumeClaim",
        "ephemeral",
        "awsElasticBlockStore",
        "azureDisk",
        "azureFile",
        "cinder",
        "gcePersistentDisk",
        "portworxVolume",
        "vsphereVolume",
        "iscsi",
        "rbd",
    }
)


class UnsupportedError(ValueError):
    """A constraint this module cannot evaluate exactly."""


Requirement = Callable[[NodeFacts], bool]


def _label_requirement(expr: Any) -> Requirement:
    if not isinstance(expr, Mapping):
        raise UnsupportedError("a matchExpressions entry is not an object")
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if not isinstance(key, str) or not isinstance(values, list):
        raise UnsupportedError(f"matchExpressions entry {expr!r} is malformed")
    wanted = frozenset(str(v) for v in values)
    if op == "In":
        return lambda n: n.labels.get(key) in wanted
    if op == "NotIn":
        return lambda n: n.labels.get(key) not in wanted
    if op == "Exists":
        return lambda n: key in n.labels
    if op == "DoesNotExist":
        return lambda n: key not in n.labels
    if op in ("Gt", "Lt"):
        bound = _int64(values[0]) if len(values) == 1 else None
        if bound is None:
            raise UnsupportedError(f"{op} needs one integer value, got {values!r}")
        return _numeric(key, bound, greater=op == "Gt")
    raise UnsupportedError(f"node affinity operator {op!r}")


_INT64 = re.compile(r"[+-]?[0-9]+")


def _int64(text: Any) -> int | None:
    """The value Go's strconv.ParseInt(text, 10, 64) reads, None where it fails.

    Not Python's int(): that also reads "1_000", " 7 " and other digits, which
    kube-scheduler's label selector refuses (a node labelled "1_0" never matches Gt).
    """
    if not isinstance(text, str) or not _INT64.fullmatch(text):
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


def _numeric(key: str, bound: int, greater: bool) -> Requirement:
    def check(node: NodeFacts) -> bool:
        value = _int64(node.labels.get(key))
        if value is None:
            return False
        return value > bound if greater else value < bound

    return check


def _field_requirement(expr: Any) -> Requirement:
    if not isinstance(expr, Mapping) or expr.get("key") != "metadata.name":
        raise UnsupportedError("matchFields other than metadata.name")
    op, values = expr.get("operator"), frozenset(map(str, expr.get("values") or []))
    if op == "In":
        return lambda n: n.name in values
    if op == "NotIn":
        return lambda n: n.name not in values
    raise UnsupportedError(f"matchFields operator {op!r}")


def _term(term: Any) -> list[Requirement]:
    if not isinstance(term, Mapping):
        raise UnsupportedError("a nodeSelectorTerm is not an object")
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not isinstance(exprs, list) or not isinstance(fields, list):
        raise UnsupportedError("a nodeSelectorTerm's requirements are not lists")
    return [_label_requirement(e) for e in exprs] + [_field_requirement(f) for f in fields]


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str
    operator: str
    value: str
    effect: str

    def tolerates(self, taint: tuple[str, str, str]) -> bool:
        key, value, effect = taint
        if self.effect and self.effect != effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == key
        return self.key == key and self.value == value


def _tolerations(raw: Any) -> tuple[Toleration, ...]:
    if not isinstance(raw, list):
        return ()
    found = []
    for t in raw:
        if not isinstance(t, Mapping):
            raise UnsupportedError("a toleration is not an object")
        op = t.get("operator") or "Equal"
        if op not in ("Equal", "Exists"):
            raise UnsupportedError(f"toleration operator {op!r}")
        found.append(
            Toleration(
                key=str(t.get("key") or ""),
                operator=str(op),
                value=str(t.get("value") or ""),
                effect=str(t.get("effect") or ""),
            )
        )
    return tuple(found)


def _beyond_labels(spec: Mapping[str, Any]) -> str | None:
    """A hard constraint that depends on other pods or on volumes: the scheduler may
    refuse every pinned node for it (anti-affinity spreading replicas, a zonal
    volume), so such a pod is not narrowed at all."""
    affinity = spec.get("affinity")
    if isinstance(affinity, Mapping):
        for kind in ("podAffinity", "podAntiAffinity"):
            terms = affinity.get(kind)
            if isinstance(terms, Mapping) and terms.get(
                "requiredDuringSchedulingIgnoredDuringExecution"
            ):
                return f"required {kind}"
    for c in spec.get("topologySpreadConstraints") or []:
        if (
            isinstance(c, Mapping)
            and c.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule"
        ):
            return "a DoNotSchedule topology spread constraint"
    for v in spec.get("volumes") or []:
        if isinstance(v, Mapping) and (kinds := NODE_BOUND_VOLUMES.intersection(v)):
            return f"a {min(kinds)!r} volume (its topology, attach limit or conflicts)"
    if spec.get("resourceClaims"):
        # Dynamic resource allocation: which nodes can hold the claimed device is the
        # DRA driver's to say (ResourceSlices), not something we can read here.
        return "a resource claim (dynamic resource allocation)"
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        ports = c.get("ports") if isinstance(c, Mapping) else None
        if any(isinstance(p, Mapping) and p.get("hostPort") for p in ports or []):
            return "a hostPort"
    return None


@dataclass(frozen=True, slots=True)
class PodConstraints:
    """A pod's label and taint constraints, compiled once per admission."""

    selector: Mapping[str, str]
    terms: Sequence[Sequence[Requirement]] | None  # None: no required node affinity
    tolerations: tuple[Toleration, ...]

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> PodConstraints:
        if (why := _beyond_labels(spec)) is not None:
            raise UnsupportedError(why)
        selector = spec.get("nodeSelector") or {}
        if not isinstance(selector, Mapping):
            raise UnsupportedError("nodeSelector is not an object")
        required = required_node_affinity(spec)
        terms = None
        if required is not None:
            raw_terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
            if not isinstance(raw_terms, list):
                raise UnsupportedError("required node affinity without a nodeSelectorTerms list")
            terms = [_term(t) for t in raw_terms]
        return cls(
            selector={str(k): str(v) for k, v in selector.items()},
            terms=terms,
            tolerations=_tolerations(spec.get("tolerations")),
        )

    def admits(self, node: NodeFacts) -> bool:
        labels = node.labels
        if any(labels.get(k) != v for k, v in self.selector.items()):
            return False
        # Terms are ORed, a term's requirements ANDed; an empty term matches nothing.
        if self.terms is not None and not any(t and all(r(node) for r in t) for t in self.terms):
            return False
        taints = node.taints + ((UNSCHEDULABLE_TAINT,) if node.unschedulable else ())
        return all(any(t.tolerates(taint) for t in self.tolerations) for taint in taints)
