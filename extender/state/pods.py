"""What a pod object's spec says about where it may run, read one way for everyone:
the admission webhook (its constraints and its pin), and the rebalancer's pod records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def required_node_affinity(spec: Mapping[str, Any]) -> Any:
    """spec.affinity.nodeAffinity.requiredDuringScheduling... as found; None if absent."""
    affinity = spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    return node_affinity.get(REQUIRED) if isinstance(node_affinity, Mapping) else None


def required_terms(spec: Mapping[str, Any]) -> list[Any]:
    """Its nodeSelectorTerms when they are a list, else none."""
    required = required_node_affinity(spec)
    terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    return terms if isinstance(terms, list) else []


def pinned_nodes(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """The nodes a pod's required node affinity names by `metadata.name In`, in order."""
    spec = obj.get("spec")
    names: dict[str, None] = {}
    for term in required_terms(spec) if isinstance(spec, Mapping) else ():
        for f in (term.get("matchFields") or []) if isinstance(term, Mapping) else ():
            by_name = isinstance(f, Mapping) and f.get("key") == "metadata.name"
            if by_name and f.get("operator") == "In":
                names.update(dict.fromkeys(str(v) for v in f.get("values") or []))
    return tuple(names)
