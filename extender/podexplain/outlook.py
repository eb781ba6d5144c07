"""`cloud4iot explain` on a running pod: what the rebalancer would do with it, and when.

Pure. The rebalancer's planner (rebalancer/plan.py) cannot be called from here (the
extender never imports the rebalancer), so its per-pod rules are read in the same order
from what an admin's credentials show: the verdicts of the one scorer, the policy's
`spec.rebalance`, the owner (kind, replicas) and the moves recorded on it (the bounded
`cloud4iot.io/moves` list, which outlives a leader). The rule names are the planner's
hold reasons (`cloud4iot_rebalancer_moves_held_total{limit}`); tests/explain/test_outlook.py
checks each against the planner on the same world.

What the CLI cannot see is said, not guessed: how long the move has been wanted (the
planner's memory: the dwell counts from then), other workloads' moves for the same
device (cooldown-device), the rate windows, disruption budgets and settle of a fresh
nearest decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloud4iot.devices import parse_time, rfc3339
from cloud4iot.policy.schema import PolicySpec
from extender.scoring import Verdict
from extender.state.snapshot import DeviceFacts


def format_time(at: Any) -> Any:
    """Epoch seconds as RFC 3339; anything else as given, and a number no date holds
    (1e20, -1e300, nan: a hand-edited annotation or status) as its text. rfc3339 of
    those raised OverflowError out of `cloud4iot explain` (found in review, 2026-12-07)."""
    if isinstance(at, bool) or not isinstance(at, int | float):
        return at
    try:
        return rfc3339(at)
    except (OverflowError, ValueError, OSError):
        return str(at)


# The planner's code sets and tier order (rebalancer/plan.py), by value.
LOAD_CODES = frozenset({"overloaded", "stale_load"})
PROXIMITY_CODES = frozenset(
    {"not_nearest_gateway", "device_heard_by_gateway", "device_not_heard", "unknown_device"}
)
TIER_RANK = {"gateway": 0, "edge": 1, "cloud": 2}


@dataclass(frozen=True, slots=True)
class Where:
    """What the planner reads besides the verdicts: the nodes' tiers and the device."""

    tiers: Mapping[str, str | None]
    device: DeviceFacts | None = None
    started: float | None = None  # the pod's status.startTime


def move_reason(where: str, target: str, current: Verdict, w: Where) -> str:
    """The planner's `_reason`, on the facts the CLI has (a device "away" is not
    worked out here: such a move shows as the nearest rule's)."""
    here, there = w.tiers.get(where), w.tiers.get(target)
    heard = w.device.sightings if w.device is not None else {}
    nearest = w.device.nearest if w.device is not None else None
    to_hearing_gateway = there == "gateway" and target in heard

    def back_or_onload() -> str:
        since = w.device.nearest_since if w.device is not None else None
        if since is not None and w.started is not None and since <= w.started:
            return "Onloading"
        return "DeviceBack"

    if not current.feasible:
        if current.code.value in LOAD_CODES:
            return "Offloading"
        if current.code.value in PROXIMITY_CODES:
            if not to_hearing_gateway:
                return "DeviceAway"
            return "Roaming" if here == "gateway" else back_or_onload()
    if to_hearing_gateway and target == nearest and here != "gateway":
        return back_or_onload()
    rank_here, rank_there = TIER_RANK.get(here or ""), TIER_RANK.get(there or "")
    if rank_here is not None and rank_there is not None:
        if rank_there < rank_here:
            return "Onloading"
        if rank_there == rank_here == TIER_RANK["gateway"]:
            return "Roaming"
    return "Offloading"


def owner_kind(owner: Mapping[str, Any] | None) -> str:
    return str(owner.get("kind")) if owner is not None else "Pod"


def replicas(owner: Mapping[str, Any] | None) -> int:
    value = ((owner or {}).get("spec") or {}).get("replicas")
    return value if isinstance(value, int) else 1


def outlook(
    where: str,
    verdicts: Sequence[Verdict],
    spec: PolicySpec,
    owner: Mapping[str, Any] | None,
    moves: Sequence[Mapping[str, Any]],
    now: float,
    w: Where,
) -> dict[str, Any]:
    """`{"action": "stays"|"held"|"moves", "rule", "target", "until", "detail", "limits"}`:
    the first rule of the planner's order that decides this pod now."""
    rb = spec.rebalance
    limits = {
        "minImprovement": rb.min_improvement,
        "dwellSeconds": rb.dwell,
        "cooldownSeconds": rb.cooldown,
        "maxMovesPerMinute": rb.max_moves_per_minute,
        "maxMovesPerNodePerMinute": rb.max_moves_per_node_per_minute,
    }

    def answer(
        action: str,
        rule: str | None,
        detail: str,
        target: str | None = None,
        until: float | None = None,
    ) -> dict[str, Any]:
        return {
            "action": action,
            "rule": rule,
            "target": target,
            "until": format_time(until),
            "detail": detail,
            "limits": limits,
            "reason": reason,
        }

    reason: str | None = None
    current = next((v for v in verdicts if v.node == where), None)
    if current is None:
        return answer("held", "unknown-node", f"{where} is not in the extender's node cache")
    others = sorted(
        (v for v in verdicts if v.feasible and v.node != where), key=lambda v: (-v.score, v.node)
    )
    forced = not current.feasible
    if not others:
        if forced:
            return answer(
                "held", "no-feasible-node", "refused here, and no other node is feasible: it stays"
            )
        return answer("stays", None, "no other node is feasible")
    best = others[0]
    reason = move_reason(where, best.node, current, w)
    needed = current.score + rb.min_improvement
    if not forced and best.score < needed:
        return answer(
            "stays",
            None,
            f"{best.node} scores {best.score}; a move needs {needed} "
            f"({where}'s {current.score} + minImprovement {rb.min_improvement})",
        )
    kind = owner_kind(owner)
    if not forced and replicas(owner) > 1:
        return answer(
            "held",
            "replicated",
            f"{best.node} scores higher, but a replica of a {replicas(owner)}-replica "
            f"{kind} is not moved for a preference: its spread is kube-scheduler's",
            best.node,
        )
    if kind not in ("Deployment", "StatefulSet"):
        return answer(
            "held", "no-controller", "no Deployment or StatefulSet would recreate it", best.node
        )
    recent = [
        (at, m)
        for m in moves
        if (at := parse_time(m.get("time"))) is not None and now - at < rb.cooldown
    ]
    if forced:
        left = {str(m.get("from")): at for at, m in recent if m.get("from")}
        top = [v.node for v in others if v.score == best.score]
        back = [left[n] for n in top if n in left]
        if back:
            until = max(back) + rb.cooldown
            return answer(
                "held",
                "no-return",
                f"the best nodes include one it left less than cooldown "
                f"{rb.cooldown:.0f} s ago: not sent back before then",
                best.node,
                until,
            )
    elif recent:
        until = max(at for at, _ in recent) + rb.cooldown
        return answer(
            "held",
            "cooldown-workload",
            f"moved less than cooldown {rb.cooldown:.0f} s ago: optional moves wait",
            best.node,
            until,
        )
    since = w.device.nearest_since if w.device is not None else None
    settle = spec.nearest.settle
    if reason in ("Roaming", "DeviceBack") and since is not None and now - since < settle:
        return answer(
            "held",
            "settle",
            f"{reason}: the device's nearest gateway changed less than settle {settle:.0f} s ago",
            best.node,
            since + settle,
        )
    dwell = rb.dwell
    if reason in ("Offloading", "Onloading"):  # the extender must have read that load
        dwell = max(dwell, spec.prometheus.refresh_interval)
    why = (
        f"{reason}, refused here ({current.code.value})"
        if forced
        else f"{reason}, {best.node} scores {best.score} vs {current.score}"
    )
    return answer(
        "moves",
        "dwell",
        f"{why}: moved to a node like {best.node} once the move has been wanted for "
        f"{dwell:.0f} s ({reason}; dwell, counted from when the rebalancer first wanted "
        "it), within "
        f"{rb.max_moves_per_minute} moves a minute and {rb.max_moves_per_node_per_minute} "
        "a node, and as disruption budgets allow",
        best.node,
        now + dwell,
    )
