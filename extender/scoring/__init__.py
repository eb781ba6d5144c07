"""The scoring core: pure placement decisions, no I/O."""

from extender.scoring.model import Code, Context, PodFacts, Refusal, Verdict
from extender.scoring.scorer import Evaluation, evaluate, judge, make_context
from extender.scoring.table import TableCache

__all__ = [
    "Code",
    "Context",
    "Evaluation",
    "PodFacts",
    "Refusal",
    "TableCache",
    "Verdict",
    "evaluate",
    "judge",
    "make_context",
]
