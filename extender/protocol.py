"""kube-scheduler's extender wire types, in and out, and nothing else.

The Go types carry no JSON tags, so keys are PascalCase (matched
case-insensitively, as Go's decoder does); prioritize answers a bare array.
Anything malformed raises ArgsError, which the webhook turns into HTTP 400.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from extender.scoring.model import UNANNOUNCED, Verdict


class ArgsError(ValueError):
    """The request body is not a valid ExtenderArgs; the message says why."""


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    pod: Mapping[str, Any]
    nodes: list[Mapping[str, Any]] | None  # full-Node mode (nodeCacheCapable: false)
    node_names: list[str] | None  # name mode (nodeCacheCapable: true)

    @property
    def mode(self) -> str:
        return "nodeNames" if self.node_names is not None else "nodes"


ARGS_FIELDS = ("pod", "nodes", "nodenames")  # ExtenderArgs, any letter case (as Go)
POD_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")  # a Pod, as kubectl shows


def _keys(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in obj.items()}


def _is_args_field(key: str) -> bool:
    """Exactly Pod, Nodes or NodeNames in any ASCII letter case: "Pod\\u0000", "Pods",
    " pod" or a look-alike letter are not."""
    return key.isascii() and key.lower() in ARGS_FIELDS


def _listed(keys: Iterable[str]) -> str:
    shown = [repr(k) for k in keys]
    return ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")


def decode(body: bytes) -> Any:
    if not body:
        raise ArgsError("empty body: expected a JSON ExtenderArgs object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ArgsError(f"body is not valid JSON: {exc}") from exc


def parse_pod(value: Any, where: str = "Pod") -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ArgsError(f"{where} must be a Pod object, got {_kind(value)}")
    meta = value.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ArgsError(f"{where}.metadata must be an object, got {_kind(meta)}")
    if isinstance(meta, dict):
        _string_map(meta.get("annotations"), f"{where}.metadata.annotations")
        _string_map(meta.get("labels"), f"{where}.metadata.labels")
    return value


def _string_map(value: Any, where: str) -> None:
    """Labels and annotations are map[string]string in Kubernetes; anything else is 400."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ArgsError(f"{where} must be an object of strings")
    for key, item in value.items():
        if not isinstance(item, str):
            raise ArgsError(f"{where}[{key!r}] must be a string, got {_kind(item)}")


def parse_args(body: bytes, *, require_nodes: bool = True) -> ExtenderArgs:
    """Decode an ExtenderArgs body (filter, prioritize, explain)."""
    data = decode(body)
    if not isinstance(data, dict):
        raise ArgsError(
            f"expected a JSON object with Pod and Nodes or NodeNames, got {_kind(data)}"
        )
    fields = _keys(data)
    if fields.get("pod") is None:
        unknown = [k for k in data if not _is_args_field(k)]
        hint = f" (unknown keys: {_listed(unknown)}; expected Pod, Nodes, NodeNames)"
        raise ArgsError("missing Pod" + (hint if unknown else ""))
    pod = parse_pod(fields["pod"])

    nodes: list[Mapping[str, Any]] | None = None
    raw_nodes = fields.get("nodes")
    if raw_nodes is not None:
        if not isinstance(raw_nodes, dict):
            raise ArgsError(f"Nodes must be a NodeList object, got {_kind(raw_nodes)}")
        items = raw_nodes.get("items")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise ArgsError(f"Nodes.items must be an array, got {_kind(items)}")
        seen: set[str] = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ArgsError(f"Nodes.items[{i}] must be a Node object, got {_kind(item)}")
            meta = item.get("metadata")
            name = meta.get("name") if isinstance(meta, dict) else None
            if not isinstance(name, str) or not name:
                raise ArgsError(f"Nodes.items[{i}] has no metadata.name")
            if name in seen:
                raise ArgsError(f"Nodes.items[{i}]: node {name!r} is listed twice")
            seen.add(name)
            _string_map(meta.get("labels"), f"Nodes.items[{i}].metadata.labels")  # type: ignore[union-attr]
        nodes = items

    names: list[str] | None = None
    raw_names = fields.get("nodenames")
    if raw_names is not None:
        # set(map(type, ...)): the check at C speed (5,000 names per request).
        if not isinstance(raw_names, list) or not set(map(type, raw_names)) <= {str}:
            raise ArgsError("NodeNames must be an array of strings")
        if len(set(raw_names)) != len(raw_names):
            raise ArgsError("NodeNames lists a node twice")
        names = raw_names

    if nodes is not None and names is not None:
        # kube-scheduler fills exactly one; answering in both modes would be ambiguous.
        raise ArgsError("both Nodes and NodeNames given: expected exactly one")
    if require_nodes and nodes is None and names is None:
        raise ArgsError("neither Nodes nor NodeNames given")
    return ExtenderArgs(pod=pod, nodes=nodes, node_names=names)


def parse_explain(body: bytes) -> ExtenderArgs:
    """/explain's body, in one of its two documented shapes, nothing else: a Pod object
    (keys among apiVersion, kind, metadata, spec, status; kind Pod if given), or
    ExtenderArgs (keys Pod, and optionally Nodes or NodeNames, in any letter case).
    Anything close to either, like a key "Pod\\u0000", is refused rather than read as
    a pod without annotations."""
    data = decode(body)
    if not isinstance(data, dict):
        raise ArgsError(f"expected a Pod object or ExtenderArgs, got {_kind(data)}")
    if any(_is_args_field(k) for k in data):
        unknown = [k for k in data if not _is_args_field(k)]
        if unknown:
            raise ArgsError(
                f"unknown keys in ExtenderArgs: {_listed(unknown)} "
                "(expected Pod, and Nodes or NodeNames)"
            )
        args = parse_args(body, require_nodes=False)
        _pod_shape(args.pod, "Pod")
        return args
    if not data:
        raise ArgsError("empty object: expected a Pod object or ExtenderArgs")
    _pod_shape(data, "body")
    return ExtenderArgs(pod=parse_pod(data, where="body"), nodes=None, node_names=None)


def _pod_shape(pod: Mapping[str, Any], where: str) -> None:
    unknown = [k for k in pod if k not in POD_FIELDS]
    if unknown:
        raise ArgsError(
            f"{where} is not a Pod object: unknown keys {_listed(unknown)} (a Pod has "
            f"{', '.join(POD_FIELDS)}; ExtenderArgs has Pod, Nodes, NodeNames)"
        )
    kind = pod.get("kind")
    if kind is not None and kind != "Pod":
        raise ArgsError(f"{where}.kind is {kind!r}: expected a Pod")


RETRY_PREFIX = (
    "no node fits yet; retrying, since what refuses it can change without a cluster event: "
)


def retry_reason(verdicts: Sequence[Verdict], shown: int = 3) -> str | None:
    """The error to answer instead of refusals, or None to answer the refusals.

    When every node refused the pod and at least one refusal may end without an event
    kube-scheduler watches (UNANNOUNCED: load, an unregistered Device, our caches), the
    refusals would park the pod for minutes: an error gets it retried with backoff.
    The message groups nodes by reason, as kube-scheduler does, the first `shown` kinds.
    """
    if not verdicts or any(v.feasible for v in verdicts):
        return None
    if not any(v.code in UNANNOUNCED for v in verdicts):
        return None
    by_reason: dict[str, int] = {}
    for v in verdicts:
        by_reason[v.reason] = by_reason.get(v.reason, 0) + 1
    ranked = sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    parts = [f"{n} node(s) {reason}" for reason, n in ranked[:shown]]
    if len(ranked) > shown:
        parts.append(f"{len(ranked) - shown} other reason(s)")
    return RETRY_PREFIX + "; ".join(parts)


def error_result(args: ExtenderArgs, error: str) -> dict[str, Any]:
    """ExtenderFilterResult carrying only `Error`: kube-scheduler fails the attempt with
    it (our extender is not ignorable) and retries the pod with its backoff."""
    nodes: dict[str, Any] | None = (
        None if args.node_names is not None else {"metadata": {}, "items": []}
    )
    return {
        "Nodes": nodes,
        "NodeNames": None,
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": error,
    }


def _as_format(reason: str) -> str:
    """A refusal as kube-scheduler uses it: as a format string on its way to the pod's
    FailedScheduling Event, where a bare "%" from a pod's own annotation (a class
    `50%-sampler`) prints as "%!-(MISSING)". Our own reasons spell "percent"."""
    return reason.replace("%", "%%") if "%" in reason else reason


def filter_result(args: ExtenderArgs, verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """ExtenderFilterResult: kept nodes in the request's own mode, refusals by kind.

    `verdicts` are in the request's order (the scorer guarantees it), so the kept
    names need no reordering. Comprehensions, not one loop with branches: each is a
    C-speed pass, and most requests have one kind of answer per node.
    """
    kept = [v.node for v in verdicts if v.feasible]
    failed: dict[str, str] = {}
    unresolvable: dict[str, str] = {}
    if len(kept) != len(verdicts):
        failed = {
            v.node: _as_format(v.reason) for v in verdicts if not v.feasible and not v.unresolvable
        }
        unresolvable = {v.node: _as_format(v.reason) for v in verdicts if v.unresolvable}
    if args.node_names is not None:
        # Only names we were given (an unknown name fails the call), in their order.
        return {
            "Nodes": None,
            "NodeNames": kept,
            "FailedNodes": failed,
            "FailedAndUnresolvableNodes": unresolvable,
            "Error": "",
        }
    keep = set(kept)
    items = [n for n in (args.nodes or []) if n["metadata"]["name"] in keep]
    return {
        "Nodes": {"metadata": {}, "items": items},  # the objects we were given, unchanged
        "NodeNames": None,
        "FailedNodes": failed,
        "FailedAndUnresolvableNodes": unresolvable,
        "Error": "",
    }


def priority_list(verdicts: Iterable[Verdict]) -> list[dict[str, Any]]:
    """HostPriorityList: a bare array, one entry per node we were given."""
    return [{"Host": v.node, "Score": v.score} for v in verdicts]


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
