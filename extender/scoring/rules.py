"""The shape every placement rule has: a hard check and a 0..1 score part."""

from __future__ import annotations

from typing import Protocol

from extender.scoring.model import Context, Refusal
from extender.state.snapshot import NodeFacts


class Rule(Protocol):
    name: str

    def check(self, ctx: Context, node: NodeFacts) -> Refusal | None:
        """A refusal when the node must not run the pod, else None."""
        ...

    def part(self, ctx: Context, node: NodeFacts) -> float:
        """How well the node serves the pod on this rule's axis, 0..1."""
        ...
