"""Architecture: a pod that lists the architectures its images exist for runs only there.

Applies to every pod, managed or not (the paper built each function for ARM and
x86 and picked the right build per node).
"""

from __future__ import annotations

from extender.scoring.model import Code, PodFacts, Refusal, refuse
from extender.state.snapshot import NodeFacts


def check_arch(pod: PodFacts, node: NodeFacts) -> Refusal | None:
    if not pod.archs or node.arch in pod.archs:
        return None
    wanted = ", ".join(sorted(pod.archs))
    if node.arch is None:
        return refuse(
            Code.ARCH_MISMATCH, f"node has no kubernetes.io/arch label; pod images: {wanted}"
        )
    return refuse(Code.ARCH_MISMATCH, f"no image for {node.arch}: pod images exist for {wanted}")
