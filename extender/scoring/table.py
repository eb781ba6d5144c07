"""Verdicts decided once per world, not once per request.

Most of a node's verdict does not depend on the pod at all, only on its class:
the tier permission, the architecture, the load limits, the tier and load parts
of the score, and the reason of a refusal. A `NodeTable` holds, for one pod
*kind* (class, effective tier order, architectures, how its device stands), the
verdict of every known node *as if the pod's device were not heard there*. A
request then judges only the few nodes its device has a sighting from (they are
the only ones whose verdict differs) and looks every other node up.

The table is built by the same `judge` as the per-node path, so the two agree by
construction; `tests/scoring/test_fast_path.py` checks it on random worlds.

Validity: a table belongs to one policy object, one node map, one load map and
one device-sync state (identity, not equality: sources replace these objects on
every change and never mutate them), and to a time window: it is rebuilt once a
load sample it counted as fresh goes stale (or the clock steps back). A new node
map alone refreshes it node by node: only nodes whose NodeFacts object changed
are judged again (a verdict depends on its own node, not on the others). Device
events do not invalidate it: they change only which nodes a request overrides.

Tables live in a `TableCache` the caller owns and passes to `scorer.evaluate`
(the extender's Runtime holds one for the webhook and admission, the rebalancer
one for its planner and stale-pin check). Nothing is written onto the Snapshot or
the Context: with the validity check above a table verdict is what `judge`
returns for that node, so the cache is memoization of a pure function, and an
evaluation without a cache gives the same answers (tests/scoring/test_fast_path.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud4iot.policy.schema import PlacementPolicy
from extender.scoring.model import Context, Verdict
from extender.state.snapshot import LoadSample, NodeFacts

MAX_TABLES = 128  # kinds kept per world; pods name classes, modes and archs freely

# How the pod's device stands, as far as nodes that do not hear it are concerned.
NO_DEVICE = "none"  # the pod names no device
KNOWN_DEVICE = "known"  # a registered Device


@dataclass(frozen=True, slots=True)
class NodeTable:
    policy: PlacementPolicy
    nodes: Mapping[str, NodeFacts]
    load: Mapping[str, LoadSample]
    devices_synced: bool
    built_at: float
    valid_until: float  # the first moment a counted-fresh load sample goes stale
    verdicts: dict[str, Verdict]  # never mutated once built
    # The feasible nodes by score, best first: filled on first use (admission asks it
    # for every new pod), never changed after.
    ranked: list[tuple[int, list[str]]] = field(default_factory=list)

    def ranking(self) -> list[tuple[int, list[str]]]:
        if not self.ranked and any(v.feasible for v in self.verdicts.values()):
            groups: dict[int, list[str]] = {}
            for name, v in self.verdicts.items():
                if v.feasible:
                    groups.setdefault(v.score, []).append(name)
            self.ranked.extend(sorted(groups.items(), reverse=True))
        return self.ranked

    def serves_but_nodes(self, ctx: Context) -> bool:
        """Whether it serves `ctx` but maybe for the node map (then it is refreshed node
        by node; the caller checks the map's identity)."""
        snap = ctx.snapshot
        return (
            self.policy is ctx.policy
            and self.load is snap.load
            and self.devices_synced == snap.devices_synced
            and self.built_at <= ctx.now <= self.valid_until
        )


def table_key(ctx: Context) -> tuple[Any, ...]:
    """What the pod-independent verdicts depend on besides the world."""
    pod, cls = ctx.pod, ctx.cls
    if cls is None:
        # Unmanaged (the function is None) or an unknown class (its name is in the reason).
        return (pod.function, None, pod.archs, None)
    order = tuple(cls.preference_for(pod.mode))
    if pod.device is None:
        device: str | tuple[str, str] = NO_DEVICE
    elif ctx.device is None:
        device = ("unknown", pod.device)  # the reason names it
    else:
        device = KNOWN_DEVICE
    return (pod.function, order, pod.archs, device)


class TableCache:
    """The per-kind verdict tables of one caller, keyed by `table_key`.

    Bounded (`MAX_TABLES` kinds; pods name classes, modes and archs freely): past
    the bound it is emptied, and a rebuild is one pass over the nodes. Used from
    one thread at a time (the event loop, or the rebalancer's planning thread).
    """

    def __init__(self, max_tables: int = MAX_TABLES) -> None:
        self._tables: dict[tuple[Any, ...], NodeTable] = {}
        self._max = max_tables

    def __len__(self) -> int:
        return len(self._tables)

    def tables(self) -> list[NodeTable]:
        return list(self._tables.values())

    def table(
        self, ctx: Context, judge: Callable[[Context, NodeFacts], Verdict], background: Context
    ) -> NodeTable:
        """The table for `ctx`'s pod kind, kept or built now.

        `background` is `ctx` without what the device contributes (nothing heard, no
        sightings): the context every table verdict is judged in.
        """
        key = table_key(ctx)
        table = self._tables.get(key)
        snap = ctx.snapshot
        if table is not None and table.serves_but_nodes(ctx):
            if table.nodes is snap.nodes:
                return table
            # A node event: the reflector replaces only the NodeFacts that changed, and
            # a verdict depends on its own node only (with the policy, load and time the
            # check above holds), so only changed nodes are judged again. At 10,000 nodes
            # a full rebuild per node event and kind was half the extender's CPU (kwok's
            # node updates republish the map every second) and /admit waited ~1.8 s.
            old, kept = table.nodes, table.verdicts
            verdicts = {
                name: kept[name] if old.get(name) is node else judge(background, node)
                for name, node in snap.nodes.items()
            }
            built_at, valid_until = table.built_at, table.valid_until
        else:
            verdicts = {name: judge(background, node) for name, node in snap.nodes.items()}
            built_at = ctx.now
            valid_until = _fresh_until(snap.load, ctx.now, ctx.load_max_age)
        table = NodeTable(
            policy=ctx.policy,
            nodes=snap.nodes,
            load=snap.load,
            devices_synced=snap.devices_synced,
            built_at=built_at,
            valid_until=valid_until,
            verdicts=verdicts,
        )
        if len(self._tables) >= self._max and key not in self._tables:
            self._tables.clear()  # hostile annotations cannot grow it
        self._tables[key] = table
        return table


def _fresh_until(load: Mapping[str, LoadSample], now: float, max_age: float) -> float:
    """When the first sample that is fresh at `now` goes stale (the load rule's test)."""
    return min(
        (s.at + max_age for s in load.values() if now - s.at <= max_age),
        default=float("inf"),
    )
