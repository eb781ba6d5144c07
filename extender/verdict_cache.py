"""Filter -> prioritize reuse: kube-scheduler asks prioritize about the nodes filter
just kept, for the same pod, usually within milliseconds. The verdicts filter
computed are kept per pod UID in a bounded, expiring cache and reused when the
snapshot and the policy are still the ones they were computed from; any change
(a watch event, a load refresh, a reload) makes them miss. Pods without a UID
(hand-made requests) are never cached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cachetools import TTLCache

from cloud4iot.policy.loader import LoadedPolicy
from extender.scoring import Verdict
from extender.state.snapshot import Snapshot

# Pods between a filter and its prioritize: kube-scheduler runs one scheduling cycle at a
# time, so a handful; the bound is for several schedulers sharing one extender. Each entry
# holds only the kept verdicts (mostly shared with the per-world tables), not the refusals:
# prioritize is asked about kept nodes only.
MAX_PODS = 64
TTL = 30.0  # seconds; well above the scheduler's extender timeout


class VerdictCache:
    def __init__(self, maxsize: int = MAX_PODS, ttl: float = TTL) -> None:
        self._cache: TTLCache[str, tuple[Snapshot, LoadedPolicy, list[Verdict]]] = TTLCache(
            maxsize=maxsize, ttl=ttl
        )
        self.hits = self.misses = 0

    def put(
        self,
        pod: Mapping[str, Any],
        snapshot: Snapshot,
        policy: LoadedPolicy,
        verdicts: Sequence[Verdict],
    ) -> None:
        uid = _uid(pod)
        if uid is not None:
            self._cache[uid] = (snapshot, policy, [v for v in verdicts if v.feasible])

    def get(
        self, pod: Mapping[str, Any], snapshot: Snapshot, policy: LoadedPolicy, names: Sequence[str]
    ) -> list[Verdict] | None:
        """The cached verdicts for exactly `names`, or None (then compute them)."""
        uid = _uid(pod)
        entry = self._cache.get(uid) if uid is not None else None
        if entry is None or entry[0] is not snapshot or entry[1] is not policy:
            self.misses += 1
            return None
        kept = entry[2]
        # The usual call: exactly the nodes filter kept, in its order (one C-speed pass).
        if len(kept) == len(names) and [v.node for v in kept] == list(names):
            self.hits += 1
            return kept
        known = {v.node: v for v in kept}
        if not all(n in known for n in names):
            self.misses += 1
            return None
        self.hits += 1
        return [known[n] for n in names]


def _uid(pod: Mapping[str, Any]) -> str | None:
    meta = pod.get("metadata")
    uid = meta.get("uid") if isinstance(meta, Mapping) else None
    return uid if isinstance(uid, str) and uid else None
