"""`cloud4iot explain` as text: a `kubectl describe`-like header, then the verdicts
grouped by reason (table) or one row per node (wide), then the history if asked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloud4iot.output import table


def _score(n: Mapping[str, Any]) -> str:
    return f"{n['node']}({n['score']})" if n.get("feasible") else str(n["node"])


def as_text(doc: Mapping[str, Any], wide: bool) -> str:
    lines: list[str] = []
    rows: list[list[Any]]

    def field(label: str, value: Any) -> None:
        lines.append(f"{label + ':':<16}{'<none>' if value in (None, '') else value}")

    field("Pod", doc["pod"])
    status = doc["phase"] + (f" on {doc['node']}" if doc.get("node") else " (not bound)")
    field("Status", status)
    field("Scheduler", doc.get("scheduler"))
    field("Function", doc.get("function"))
    field("Device", doc.get("device"))
    if doc.get("mode"):
        field("Mode", doc["mode"])
    field("Policy", doc.get("policy"))
    if doc.get("pinned"):
        field("Pinned to", f"{', '.join(doc['pinned'])} ({doc.get('narrowed') or 'node affinity'})")
    load = doc.get("load") or {}
    if load.get("source") is None:
        field("Load", "not read (give --prometheus-url or --prometheus-service)")
    elif load.get("error"):
        field("Load", f"{load['source']}: failed, {load['error']}")
    else:
        field("Load", f"{load['source']}: {load.get('nodes_with_load', 0)} node(s)")
    field("Summary", doc.get("summary"))

    cond = doc.get("podScheduled")
    sched = doc.get("schedulerEvents") or []
    if cond or sched:
        lines.append("kube-scheduler:")
        if cond:
            msg = f"  PodScheduled={cond.get('status')}"
            if cond.get("reason"):
                msg += f" {cond['reason']}"
            if cond.get("message"):
                msg += f": {cond['message']}"
            lines.append(msg)
        for e in sched[-5:]:
            lines.append(
                f"  {e['type']} {e['reason']} (x{e['count']}, {e['time']}): {e['message']}"
            )

    if doc.get("current") is not None or doc.get("bestAlternative") is not None:
        cur, best = doc.get("current"), doc.get("bestAlternative")
        lines.append("")
        rows = []
        if cur:
            rows.append(["current", cur["node"], cur["score"], cur["code"], cur["reason"]])
        if best:
            rows.append(["best other", best["node"], best["score"], best["code"], best["reason"]])
        else:
            rows.append(["best other", None, None, None, "no other feasible node"])
        lines.append(table(["", "NODE", "SCORE", "CODE", "REASON"], rows))
    plan = doc.get("rebalancer")
    if plan:
        lines.append("")
        word = "earliest" if plan["action"] == "moves" else "until"
        when = f" ({word} {plan['until']})" if plan.get("until") else ""
        rule = f" [{plan['rule']}]" if plan.get("rule") else ""
        lines.append(f"{'Rebalancer:':<16}{plan['action']}{rule}{when}: {plan['detail']}")
        if wide:
            limits = ", ".join(f"{k} {v:g}" for k, v in plan["limits"].items())
            lines.append(f"{'Limits:':<16}{limits}")

    lines.append("")
    lines.append(verdict_table(doc, wide))

    if "history" in doc:
        lines.append("")
        lines.append("History:")
        rows = [
            [h.get("time"), h.get("what"), h.get("from"), h.get("detail")] for h in doc["history"]
        ]
        lines.append(table(["TIME", "WHAT", "FROM", "DETAIL"], rows) if rows else "  <none>")
    return "\n".join(lines)


def verdict_table(doc: Mapping[str, Any], wide: bool) -> str:
    """The verdicts of an explain or simulate document: grouped by reason (the nodes
    that share it, best score first), or one row per node (`wide`)."""
    rows: list[list[Any]]
    if wide:
        pinned = bool(doc.get("pinned"))
        headers = (
            ["NODE", "FEASIBLE", "SCORE", "CODE"] + (["PINNED"] if pinned else []) + ["REASON"]
        )
        rows = [
            [n["node"], n["feasible"], n["score"], n["code"]]
            + (["yes" if n.get("pinned") else "no"] if pinned else [])
            + [n["reason"]]
            for n in doc["nodes"]
        ]
        return table(headers, rows)
    by_node = {n["node"]: n for n in doc["nodes"]}
    rows = [
        [
            g["code"],
            g["count"],
            ", ".join(_score(by_node[x]) for x in g["nodes"][:8])
            + (", ..." if len(g["nodes"]) > 8 else ""),
            g["reason"],
        ]
        for g in doc.get("groups") or []
    ]
    return table(["CODE", "NODES", "WHICH", "REASON"], rows)


def simulate_text(doc: Mapping[str, Any], wide: bool) -> str:
    """`cloud4iot simulate` as text: the pod's facts, the best node, the verdicts."""
    head = [
        ("Pod", doc["pod"]),
        ("Function", doc.get("function")),
        ("Device", doc.get("device")),
        ("Mode", doc.get("mode")),
        ("Policy", doc.get("policy")),
        ("Best", doc.get("best") or "none: every node refuses it"),
    ]
    lines = [f"{label + ':':<16}{'<none>' if v in (None, '') else v}" for label, v in head]
    return "\n".join([*lines, "", verdict_table(doc, wide)])
