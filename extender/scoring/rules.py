"""The shape every placement rule has: one call per node, a refusal or a score part.

Returning the refusal or the 0..1 part from one call keeps the per-node cost to
one lookup per rule (a 5,000-node request calls each rule 5,000 times).
"""

from __future__ import annotations

from typing import Protocol

from extender.scoring.model import Context, Refusal
from extender.state.snapshot import NodeFacts


class Rule(Protocol):
    name: str

    def judge(self, ctx: Context, node: NodeFacts) -> Refusal | float:
        """A Refusal when the node must not run the pod, else its part in 0..1."""
        ...
