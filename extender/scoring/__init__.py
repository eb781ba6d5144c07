"""The scoring core: pure placement decisions, no I/O."""

from extender.scoring.model import Code, Context, PodFacts, Refusal, Verdict
from extender.scoring.scorer import (
    evaluate,
    evaluate_known,
    evaluate_names,
    feasible_by_score,
    judge,
    make_context,
)

__all__ = [
    "Code",
    "Context",
    "PodFacts",
    "Refusal",
    "Verdict",
    "evaluate",
    "evaluate_known",
    "evaluate_names",
    "feasible_by_score",
    "judge",
    "make_context",
]
