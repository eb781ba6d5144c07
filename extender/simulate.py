"""The offline what-if tool: a state file + a pod + a policy -> every node's verdict.

The state file's format is in extender/state/statefile.py. The scorer it calls is
the webhook's; only the inputs come from files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloud4iot.policy.loader import load_policy
from extender.explain import explanation, groups
from extender.scoring import PodFacts, evaluate
from extender.state.statefile import StateFileError, load_state, read_yaml


def load_pod(path: Path) -> dict[str, Any]:
    pod = read_yaml(path)
    if not isinstance(pod, dict):
        raise StateFileError(f"{path}: expected a Pod object")
    return pod


def simulate(policy_path: Path, state_path: Path, pod_path: Path) -> dict[str, Any]:
    policy = load_policy(policy_path)
    snapshot, now = load_state(state_path)
    pod = load_pod(pod_path)
    verdicts = evaluate(pod, snapshot, policy.policy, now, explain=True).verdicts()
    doc = explanation(PodFacts.from_pod(pod), policy, verdicts)
    doc["groups"] = groups(verdicts)  # by reason, as `cloud4iot explain` groups them
    return doc
