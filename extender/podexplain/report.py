"""`cloud4iot explain pod/NAME`: the report (pure). What the CLI read from the cluster
(the pod, its Events, its owner's move record) plus the scorer's verdicts over a
Snapshot built the way the extender builds its own -> one document, rendered as a
table, wide table, JSON or YAML (extender/podexplain/render.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloud4iot.devices import parse_time
from cloud4iot.policy.loader import LoadedPolicy
from cloud4iot.vocabulary import (
    LAST_MOVE_ANNOTATION,
    MOVES_ANNOTATION,
    NARROWED_ANNOTATION,
    NARROWED_FROM_ANNOTATION,
)
from extender.explain import explanation, groups
from extender.podexplain.outlook import Where, format_time, outlook
from extender.scoring import PodFacts, Verdict
from extender.state.pods import pinned_nodes
from extender.state.snapshot import DeviceFacts

# What kube-scheduler and the rebalancer leave on a pod that says where it went and why.
SCHEDULER_REASONS = frozenset({"Scheduled", "FailedScheduling", "Preempted"})


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the CLI read; every field a plain JSON-like value (no client objects)."""

    pod: Mapping[str, Any]
    events: Sequence[Mapping[str, Any]] = ()  # the pod's and its owner's, any order
    owner: Mapping[str, Any] | None = None  # the Deployment/StatefulSet, when there is one
    load_source: str | None = None  # where node load came from; None: not read
    load_error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def phase(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    return str(status.get("phase") or "Unknown")


def node_of(pod: Mapping[str, Any]) -> str | None:
    node = (pod.get("spec") or {}).get("nodeName")
    return node if isinstance(node, str) and node else None


def scheduled_condition(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The PodScheduled condition: kube-scheduler's own verdict (with the extender's
    refusals folded into its message when every node was refused)."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == "PodScheduled":
            return {k: c.get(k) for k in ("status", "reason", "message", "lastTransitionTime")}
    return None


def event_line(e: Mapping[str, Any]) -> dict[str, Any]:
    involved = e.get("involvedObject") or {}
    source = e.get("source") or {}
    when = e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp")
    return {
        "time": when,
        "type": e.get("type"),
        "reason": e.get("reason"),
        "object": f"{involved.get('kind', '')}/{involved.get('name', '')}",
        "from": e.get("reportingComponent") or source.get("component") or "",
        "count": e.get("count") or 1,
        "message": e.get("message") or "",
    }


def _at(line: Mapping[str, Any]) -> float:
    return parse_time(line.get("time")) or 0.0


def _annotations(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    meta = (obj or {}).get("metadata") or {}
    ann = meta.get("annotations") if isinstance(meta, Mapping) else None
    return ann if isinstance(ann, Mapping) else {}


def narrowed_from(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What the admission pin was chosen from (NARROWED_FROM_ANNOTATION), {} if absent
    or unreadable (older pods carry only the "K of N feasible nodes" note)."""
    import orjson

    raw = _annotations(pod).get(NARROWED_FROM_ANNOTATION)
    try:
        doc = orjson.loads(raw) if isinstance(raw, str) else None
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(doc, dict) or not isinstance(doc.get("candidates"), list):
        return {}
    pairs = doc["candidates"]
    doc["candidates"] = [c for c in pairs if isinstance(c, list) and len(c) == 2 and c[0]]
    return doc


def history(inputs: Inputs, device: DeviceFacts | None = None) -> list[dict[str, Any]]:
    """What was decided for this pod and its workload, oldest first: the admission pin
    (at creation), kube-scheduler's binding or refusals, the rebalancer's moves (Events,
    and the bounded list of moves kept on the workload, which outlives Events)."""
    out: list[dict[str, Any]] = []
    meta = inputs.pod.get("metadata") or {}
    narrowed = _annotations(inputs.pod).get(NARROWED_ANNOTATION)
    pins = pinned_nodes(inputs.pod)
    if narrowed or pins:
        chosen = narrowed_from(inputs.pod)
        scored = [f"{n} ({s})" for n, s in chosen.get("candidates") or () if s is not None]
        detail = f"pinned to {', '.join(scored or pins) or '-'} ({narrowed or 'no note'})"
        if chosen.get("device"):
            detail += f"; device {chosen['device']} nearest {chosen.get('nearest') or 'none'}"
        out.append(
            {
                "time": meta.get("creationTimestamp"),
                "what": "Narrowed",
                "from": "cloud4iot-extender (admission)",
                "detail": detail,
            }
        )
    if device is not None and device.nearest is not None and device.nearest_since is not None:
        out.append(  # the nearest decision the pod follows (Roaming, DeviceBack)
            {
                "time": format_time(device.nearest_since),
                "what": "NearestGateway",
                "from": "cloud4iot-extender (Device status.nearest)",
                "detail": f"device {device.name} nearest {device.nearest}",
            }
        )
    seen: set[tuple[Any, Any]] = set()
    for e in inputs.events:
        line = event_line(e)
        key = (line["reason"], line["message"])
        if key in seen:
            continue
        seen.add(key)
        out.append(
            {
                "time": line["time"],
                "what": line["reason"],
                "from": line["from"],
                "detail": f"{line['object']}: {line['message']}",
                "type": line["type"],
            }
        )
    for note in moves_recorded(inputs.owner):
        detail = f"{note.get('from') or '?'} -> {note.get('to') or '(parked)'}"
        if note.get("device"):
            detail += f"; device {note['device']}"
        if any(
            h["what"] == note.get("reason") and detail.split(";")[0] in h["detail"] for h in out
        ):
            continue  # its Event is still there and says more
        out.append(
            {
                "time": note.get("time"),
                "what": note.get("reason"),
                "from": "cloud4iot-rebalancer (recorded on the workload)",
                "detail": detail,
            }
        )
    out.sort(key=_at)
    for h in out:  # one time format (Events carry microseconds, notes seconds)
        at = parse_time(h.get("time"))
        h["time"] = format_time(at) if at is not None else h.get("time")
    return out


def moves_recorded(owner: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The workload's record of its moves: the bounded list, else the last move."""
    import orjson

    ann = _annotations(owner)
    for key in (MOVES_ANNOTATION, LAST_MOVE_ANNOTATION):
        raw = ann.get(key)
        if not isinstance(raw, str):
            continue
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        notes = doc if isinstance(doc, list) else [doc]
        return [_note(n) for n in notes if isinstance(n, Mapping)]
    return []


def _note(n: Mapping[str, Any]) -> dict[str, Any]:
    at = n.get("at")
    return {
        "time": format_time(at),
        "reason": n.get("reason"),
        "from": n.get("from"),
        "to": n.get("to"),
        "device": n.get("device"),
    }


def report(
    inputs: Inputs,
    policy: LoadedPolicy,
    verdicts: list[Verdict],
    snapshot_info: Mapping[str, Any],
    now: float,
    w: Where,
    with_history: bool = False,
) -> dict[str, Any]:
    """The document every output format renders."""
    pod = inputs.pod
    facts = PodFacts.from_pod(pod)
    doc = explanation(facts, policy, verdicts)
    where = node_of(pod)
    pins = pinned_nodes(pod)
    by_node = {v.node: v for v in verdicts}
    doc.update(
        phase=phase(pod),
        node=where,
        scheduler=(pod.get("spec") or {}).get("schedulerName"),
        managed=facts.function is not None,
        narrowed=_annotations(pod).get(NARROWED_ANNOTATION),
        pinned=list(pins),
        podScheduled=scheduled_condition(pod),
        schedulerEvents=[
            event_line(e)
            for e in inputs.events
            if e.get("reason") in SCHEDULER_REASONS
            and (e.get("involvedObject") or {}).get("kind") == "Pod"
        ],
        groups=groups(verdicts),
        load={"source": inputs.load_source, "error": inputs.load_error, **snapshot_info},
    )
    if pins:
        for n in doc["nodes"]:
            n["pinned"] = n["node"] in pins
    if where is not None:
        current = by_node.get(where)
        alternatives = [v for v in verdicts if v.feasible and v.node != where]
        best = max(alternatives, key=lambda v: (v.score, v.node), default=None)
        doc["current"] = current.as_dict() if current else None
        doc["bestAlternative"] = best.as_dict() if best else None
        doc["summary"] = running_summary(where, current, best)
        doc["rebalancer"] = outlook(
            where, verdicts, policy.policy.spec, inputs.owner, moves_recorded(inputs.owner), now, w
        )
    else:
        doc["summary"] = pending_summary(doc, verdicts, pins)
    if with_history:
        doc["history"] = history(inputs, w.device)
    return doc


def running_summary(where: str, current: Verdict | None, best: Verdict | None) -> str:
    if current is None:
        return f"on {where}, a node the extender does not know (no tier label, or gone)"
    if not current.feasible:
        return (
            f"on {where}, which the scorer refuses now ({current.code.value}: {current.reason}); "
            + (
                f"the rebalancer moves it to a node like {best.node} (score {best.score})"
                if best
                else "no other node is feasible either, so it stays"
            )
        )
    if best is not None and best.score > current.score:
        return (
            f"on {where} (score {current.score}); {best.node} scores {best.score} now: "
            "the rebalancer moves it once the difference outlasts the dwell and cooldown"
        )
    return f"on {where} (score {current.score}), the best feasible node now"


def pending_summary(
    doc: Mapping[str, Any], verdicts: Sequence[Verdict], pins: Sequence[str]
) -> str:
    feasible = [v for v in verdicts if v.feasible]
    offered = [v for v in feasible if not pins or v.node in pins]
    if not feasible:
        return f"pending: the extender refuses all {len(verdicts)} nodes (reasons below)"
    if not offered:
        return (
            f"pending: {len(feasible)} node(s) are feasible now but none is in the admission "
            f"pin ({', '.join(pins)}); the rebalancer recreates a pod whose pin went stale"
        )
    names = ", ".join(v.node for v in offered[:5])
    return (
        f"pending although the extender accepts {len(offered)} node(s) ({names}): "
        "see kube-scheduler's reason (resources, taints, other filters)"
    )
