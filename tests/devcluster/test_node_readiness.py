"""Which nodes `up` waits for: Ready, and without the node lifecycle's taints."""

from __future__ import annotations

from typing import Any

from devcluster.kube import ready_node_names


def node(name: str, ready: str | None, taints: tuple[str, ...] = ()) -> dict[str, Any]:
    conditions = [] if ready is None else [{"type": "Ready", "status": ready}]
    return {
        "metadata": {"name": name},
        "spec": {"taints": [{"key": k, "effect": "NoSchedule"} for k in taints]},
        "status": {"conditions": conditions},
    }


def test_a_ready_node_still_carrying_its_creation_taint_is_not_counted() -> None:
    # At 5,000 nodes kube-controller-manager lifted the `not-ready` taint minutes after
    # kwok marked the node Ready: 638 such nodes when a benchmark's clock started.
    nodes = {
        "items": [
            node("ready", "True"),
            node("ready-tainted", "True", ("node.kubernetes.io/not-ready",)),
            node("unreachable", "True", ("node.kubernetes.io/unreachable",)),
            node("not-ready", "False"),
            node("unknown", "Unknown"),
            node("new", None),
            node("ready-own-taint", "True", ("cloud4iot.io/dedicated",)),
        ]
    }
    assert ready_node_names(nodes) == {"ready", "ready-own-taint"}


def test_an_empty_or_sparse_node_list_is_read() -> None:
    assert ready_node_names({}) == set()
    assert ready_node_names({"items": [{"metadata": {"name": "bare"}}]}) == set()
