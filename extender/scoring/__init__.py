"""The scoring core: pure placement decisions, no I/O."""

from extender.scoring.model import Code, Context, PodFacts, Refusal, Verdict
from extender.scoring.scorer import evaluate, judge, make_context, unknown_node

__all__ = [
    "Code",
    "Context",
    "PodFacts",
    "Refusal",
    "Verdict",
    "evaluate",
    "judge",
    "make_context",
    "unknown_node",
]
