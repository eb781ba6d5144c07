"""The explanation document shared by /explain and `cloud4iot simulate` (pure)."""

from __future__ import annotations

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
