"""Resource requests and allocatable, summed the way kube-scheduler's NodeResourcesFit does.

Admission narrowing pins a pod to a few nodes; a pin onto nodes that have no room for
its requests would leave it Pending while others had room. So the extender keeps,
per node, what its pods request (`NodeUse`, from a pod watch: bound pods and pods
nominated to a node), and `fits` answers what NodeResourcesFit's filter would:

- a pod's requests (`pod_requests`): the containers summed; regular init containers
  each alone (the max of them), restartable init containers (sidecars) added to both;
  pod-level requests (spec.resources) replace cpu, memory and hugepages; the pod's
  overhead added; a pod on a node resized in place counts the most of its spec, actuated
  and allocated requests;
- a node's used part: the same sum over the pods on it;
- refused when one more pod exceeds `pods`, or when a requested amount (> 0) exceeds
  allocatable minus used (cpu in millicores, the rest in whole units, rounded up as
  resource.Quantity's Value() rounds).

Quantities are parsed here (no client library at import: admission runs per pod).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation, Overflow
from types import MappingProxyType
from typing import Any

CPU = "cpu"
PODS = "pods"
# Pod-level requests may set these only (PodLevelResources); others stay per container.
POD_LEVEL = frozenset({"cpu", "memory"})

_QUANTITY = re.compile(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?")
_SUFFIX = {
    None: Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_EMPTY: Mapping[str, int] = MappingProxyType({})
_INT64_MAX = Decimal(2**63 - 1)


def quantity(name: str, raw: Any) -> int:
    """A Kubernetes quantity in the scheduler's unit for `name`: millicores for cpu,
    whole units (rounded up) for everything else. ValueError when malformed."""
    if isinstance(raw, bool):
        raise ValueError(f"{name}: {raw!r} is not a quantity")
    text = str(raw).strip() if isinstance(raw, int | float | str) else None
    match = _QUANTITY.fullmatch(text) if text else None
    if match is None:
        raise ValueError(f"{name}: {raw!r} is not a quantity")
    try:
        value = Decimal(match.group(1)) * _SUFFIX[match.group(2)]
        if name == CPU:
            value *= 1000
    except Overflow:
        value = _INT64_MAX  # (its sign: the regex allows "-1e999999"; clamped below)
        if match.group(1).startswith("-"):
            value = -value
    except InvalidOperation as exc:
        raise ValueError(f"{name}: {raw!r} is not a quantity") from exc
    # Clamped to int64 as resource.Quantity's Value() and MilliValue() clamp, and
    # before the conversion: int() of "1e300000" is a 300,000-digit number, seconds of
    # CPU on the event loop for one crafted value (found in review, 2026-12-07).
    if value > _INT64_MAX:
        return int(_INT64_MAX)
    if value < -_INT64_MAX:
        return -int(_INT64_MAX)
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def amounts(raw: Any) -> dict[str, int]:
    """A resource list ({name: quantity}) in scheduler units; malformed entries raise."""
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): quantity(str(k), v) for k, v in raw.items()}


def _add(into: dict[str, int], more: Mapping[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def _container_requests(c: Any) -> dict[str, int]:
    res = c.get("resources") if isinstance(c, Mapping) else None
    return amounts(res.get("requests")) if isinstance(res, Mapping) else {}


def _pod_level(name: str) -> bool:
    return name in POD_LEVEL or name.startswith("hugepages-")


def _resize_infeasible(status: Mapping[str, Any]) -> bool:
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "PodResizePending":
            return bool(cond.get("reason") == "Infeasible")
    return False


def _effective(
    spec: Mapping[str, int], reported: Mapping[str, Any], infeasible: bool
) -> dict[str, int]:
    """What a resized container (or pod) counts: the most of what its spec asks, what
    the kubelet actuated (`resources.requests`) and what it allocated; an infeasible
    resize's spec is not counted (component-helpers determineEffectiveRequests)."""
    res = reported.get("resources")
    actuated = amounts(res.get("requests")) if isinstance(res, Mapping) else {}
    out = {} if infeasible else dict(spec)
    for k, v in (*actuated.items(), *amounts(reported.get("allocatedResources")).items()):
        out[k] = max(out.get(k, 0), v)
    return out


def pod_requests(
    spec: Mapping[str, Any], status: Mapping[str, Any] | None = None
) -> Mapping[str, int]:
    """What NodeResourcesFit counts for a pod (k8s.io/component-helpers resource.PodRequests).

    With `status` (a pod already on a node), an in-place resize counts as the scheduler
    counts it: per container (and per sidecar, and pod-level) the most of its spec, the
    actuated and the allocated requests, so a pod resized up holds its room before the
    spec says so and one resized down holds its old room until the kubelet has done it."""
    reported: dict[str, Mapping[str, Any]] = {}
    infeasible = False
    if isinstance(status, Mapping):
        for key in ("containerStatuses", "initContainerStatuses"):
            for cs in status.get(key) or []:
                if isinstance(cs, Mapping) and isinstance(cs.get("resources"), Mapping):
                    reported[str(cs.get("name"))] = cs
        infeasible = _resize_infeasible(status)

    def requests_of(c: Any) -> dict[str, int]:
        own = _container_requests(c)
        name = c.get("name") if isinstance(c, Mapping) else None
        cs = reported.get(name) if isinstance(name, str) else None
        return own if cs is None else _effective(own, cs, infeasible)

    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        _add(total, requests_of(c))
    sidecars: dict[str, int] = {}  # restartable init containers started so far
    init_peak: dict[str, int] = {}
    for c in spec.get("initContainers") or []:
        if isinstance(c, Mapping) and c.get("restartPolicy") == "Always":
            own = requests_of(c)  # a sidecar may be resized; a regular init container not
            _add(total, own)  # runs beside the app containers
            _add(sidecars, own)
            during = dict(sidecars)
        else:
            during = dict(sidecars)
            _add(during, _container_requests(c))
        for k, v in during.items():
            init_peak[k] = max(init_peak.get(k, 0), v)
    for k, v in init_peak.items():
        total[k] = max(total.get(k, 0), v)
    pod_level = spec.get("resources")
    if isinstance(pod_level, Mapping):
        asked = {k: v for k, v in amounts(pod_level.get("requests")).items() if _pod_level(k)}
        if asked and isinstance(status, Mapping) and isinstance(status.get("resources"), Mapping):
            counted = _effective(asked, status, infeasible)
            asked = {k: counted.get(k, 0) for k in asked}
        total.update(asked)
    _add(total, amounts(spec.get("overhead")))
    return MappingProxyType(total)


@dataclass(frozen=True, slots=True)
class NodeUse:
    """What the pods on a node request in all, and how many they are."""

    pods: int = 0
    requests: Mapping[str, int] = field(default_factory=lambda: _EMPTY)

    def plus(self, requests: Mapping[str, int], sign: int = 1) -> NodeUse:
        total = dict(self.requests)
        for k, v in requests.items():
            total[k] = total.get(k, 0) + sign * v
        return NodeUse(self.pods + sign, MappingProxyType(total))


NO_USE = NodeUse()


def fits(requests: Mapping[str, int], allocatable: Mapping[str, int] | None, used: NodeUse) -> bool:
    """Whether one more pod with `requests` passes NodeResourcesFit on a node with
    `allocatable` (None: the node reports none; not checked) and `used`."""
    if allocatable is None:
        return True
    if used.pods + 1 > allocatable.get(PODS, 0):
        return False
    have = used.requests
    for k, want in requests.items():
        if want > 0 and want > allocatable.get(k, 0) - have.get(k, 0):
            return False
    return True


@dataclass(frozen=True, slots=True)
class PodUse:
    """A pod as the usage index sees it: the node it counts on, and its requests."""

    node: str | None  # spec.nodeName, else status.nominatedNodeName, else None
    requests: Mapping[str, int]


def pod_use(obj: Mapping[str, Any], observed_at: float) -> PodUse:
    """PodUse of a Pod object (a Reflector parse: ValueError = skip it)."""
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise ValueError("pod has no spec")
    status = obj.get("status")
    phase = status.get("phase") if isinstance(status, Mapping) else None
    node = spec.get("nodeName") or None
    if node is None and isinstance(status, Mapping):
        node = status.get("nominatedNodeName") or None
    if phase in ("Succeeded", "Failed"):
        node = None  # finished: no longer counted (the scheduler forgets it too)
    return PodUse(
        str(node) if node else None,
        pod_requests(spec, status if isinstance(status, Mapping) else None),
    )


@dataclass(slots=True)
class UsageIndex:
    """Per-node NodeUse kept current from pod changes (a Reflector's `observe`)."""

    by_node: dict[str, NodeUse] = field(default_factory=dict)

    def observe(self, _key: str, old: PodUse | None, new: PodUse | None) -> None:
        if old is not None and new is not None and old == new:
            return
        if old is not None and old.node is not None:
            left = self.by_node.get(old.node, NO_USE).plus(old.requests, -1)
            if left.pods <= 0:
                self.by_node.pop(old.node, None)
            else:
                self.by_node[old.node] = left
        if new is not None and new.node is not None:
            self.by_node[new.node] = self.by_node.get(new.node, NO_USE).plus(new.requests)
