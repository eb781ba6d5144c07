"""The explanation document shared by /explain and `cloud4iot simulate` (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cloud4iot.policy.loader import LoadedPolicy
from extender.scoring import PodFacts, Verdict


def explanation(pod: PodFacts, policy: LoadedPolicy, verdicts: list[Verdict]) -> dict[str, Any]:
    """The explain/simulate document: best node first, refused nodes last."""
    ranked = sorted(verdicts, key=lambda v: (not v.feasible, -v.score, v.node))
    return {
        "pod": f"{pod.namespace}/{pod.name}",
        "function": pod.function,
        "device": pod.device,
        "mode": pod.mode,
        "policy": policy.version,
        "best": ranked[0].node if ranked and ranked[0].feasible else None,
        "nodes": [v.as_dict() for v in ranked],
    }


def groups(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """`kubectl describe`-like: one row per reason, the nodes that share it; kept
    nodes first (best score first), then refusals by how many nodes they hold."""
    by: dict[tuple[str, str], list[Verdict]] = {}
    for v in verdicts:
        by.setdefault((v.code.value, v.reason if not v.feasible else "feasible"), []).append(v)
    rows: list[dict[str, Any]] = [
        {
            "code": code,
            "reason": reason,
            "count": len(vs),
            "nodes": [v.node for v in sorted(vs, key=lambda v: (-v.score, v.node))],
            "feasible": vs[0].feasible,
        }
        for (code, reason), vs in by.items()
    ]
    rows.sort(key=lambda r: (not r["feasible"], -r["count"], r["code"], r["reason"]))
    return rows
