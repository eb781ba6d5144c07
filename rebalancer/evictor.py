"""The one place a move is made, and remembered until the watches show it.

In the manner of descheduler's PodEvictor: the planners (plan.py, repin.py) say what
should move; `Evictor.apply` performs it and nothing else does.

* A rollout is a pod-template annotation on the Deployment (make-before-break: the
  new replica is placed by the scheduler through the extender; the old one goes
  when the new one is Ready). An eviction goes through the Eviction API, so
  PodDisruptionBudgets hold (a budget's 429 is retried on later plans; the
  apiserver's rate limiting's 429 is a refusal, not before its Retry-After), with a
  uid precondition (a replacement of the same name is not hit: 409, moot). A park
  or unpark patches the Deployment's replicas. A recreate evicts a pending pod
  whose admission pin went stale, with a uid precondition too.
* The move is recorded on the workload (annotation `cloud4iot.io/last-move`), so a
  new leader keeps the cooldowns of the last one and never moves a pod twice.
* Until the watches show a move (a later Deployment generation, the evicted pod
  leaving; at most IN_FLIGHT) it is in flight: the workload counts as mid-rollout
  and the pod as leaving, so a plan made before the caches catch up cannot repeat
  it; after an eviction the owner's other replicas wait until every one is back.
* Every move leaves an Event on the pod and on its owner. `dry_run` logs and emits
  the Events ("would ..."), and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

from cloud4iot.devices import MERGE_PATCH, rfc3339
from cloud4iot.events import event_body
from cloud4iot.policy.store import PolicyStore
from cloud4iot.replicas import MAX_PARKED_REPLICAS
from cloud4iot.vocabulary import (
    LAST_MOVE_ANNOTATION,
    MOVED_ANNOTATION,
    MOVES_ANNOTATION,
    PARKED_ANNOTATION,
)
from extender.state.kube import retry_after
from rebalancer.metrics import RebalancerMetrics
from rebalancer.model import Action, Kind, ManagedPod, Move, Workload
from rebalancer.workloads import (
    DeploymentRecord,
    MoveNote,
    PodIndex,
    PodRecord,
    Workloads,
    move_note_json,
    moves_json,
)

log = logging.getLogger(__name__)

COMPONENT = "cloud4iot-rebalancer"
# A move made but not yet shown by the watches holds its workload (or pod) for at
# most this long: a watch that never shows it must not hold it for good.
IN_FLIGHT = 60.0
# A move that failed or was blocked is planned again on later passes; its Warning is
# recorded once per workload, reason and this many seconds, not on every pass.
WARN_EVERY = 300.0
# A workload whose move the apiserver refused (RBAC, a webhook, an invalid change) is
# not planned again for BACKOFF_FIRST seconds, doubling per refusal in a row up to
# BACKOFF_MAX (at least a Retry-After: API Priority and Fairness throttling us); a made
# move resets it. A disruption budget's refusal is not backed off: it clears as soon as
# a replica is back, and is planned again at once.
BACKOFF_FIRST = 10.0
BACKOFF_MAX = 300.0
# Warning Event reasons (docs/operations.md): the move was not made.
MOVE_FAILED = "MoveFailed"  # the apiserver refused the change (an error answer)
MOVE_BLOCKED = "MoveBlocked"  # a PodDisruptionBudget refused the eviction (429)
# The StatusCause type (policy/v1 DisruptionBudgetCause) of a budget's 429 on eviction.
DISRUPTION_BUDGET_CAUSE = "DisruptionBudget"

# What became of a move: made; refused (a 4xx: it did not happen); refused by a
# disruption budget (429: not made either, planned again at once); no answer or a 5xx
# (it may have happened: treated as made); logged only (dry run); moot (an eviction or
# recreate of a pod that is gone already: not made, nothing to back off).
Outcome = Literal["ok", "failed", "blocked", "unknown", "dry-run", "moot"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Refusals in a row of a workload's moves: not planned again before `until`."""

    until: float
    delay: float
    status: int | None  # the last refusal's, logged once per kind


Owner = tuple[str, str, str]  # namespace, kind, name


def refused(status: int | None) -> bool:
    """Whether an error answer says the request was not carried out: a 4xx (invalid,
    forbidden, not found, conflict, unprocessable, too many requests) but a 408. A 5xx
    or no status may come after the write committed (an etcd or webhook timeout)."""
    return status is not None and 400 <= status < 500 and status != 408


def budget_refusal(exc: Any) -> bool:
    """Whether an error answer (an ApiException) is a PodDisruptionBudget's refusal: a
    429 whose Status names the budget in its causes, as the eviction subresource does.
    The apiserver's own rate limiting (API Priority and Fairness, max-in-flight) also
    answers 429, in plain text: it says nothing of the move."""
    body = getattr(exc, "body", None)
    if getattr(exc, "status", None) != 429 or not isinstance(body, str | bytes):
        return False
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    details = doc.get("details") if isinstance(doc, dict) else None
    causes = details.get("causes") if isinstance(details, dict) else None
    return isinstance(causes, list) and any(
        isinstance(c, dict) and c.get("reason") == DISRUPTION_BUDGET_CAUSE for c in causes
    )


def answered_retry_after(exc: Any) -> float:
    """The seconds an error answer's Retry-After asks for (0 without one)."""
    return retry_after(getattr(exc, "headers", None)) or 0.0


@dataclass(slots=True)
class Evictor:
    core: Any  # kubernetes.aio CoreV1Api
    apps: Any  # kubernetes.aio AppsV1Api
    policy: PolicyStore
    index: PodIndex
    workloads: Workloads
    metrics: RebalancerMetrics
    dry_run: bool = False
    identity: str = COMPONENT
    # --- the record of moves in flight ---------------------------------------------
    evicted: dict[str, float] = field(default_factory=dict)  # pod uid -> when, until it leaves
    # owner -> (when, evicted pod key, its uid): until the owner has every replica Ready
    # again, its other replicas are not evicted.
    evicting: dict[Owner, tuple[float, str, str]] = field(default_factory=dict)
    pretend: dict[str, float] = field(default_factory=dict)  # dry run: pod uid -> "moved" at
    repinned: dict[str, float] = field(default_factory=dict)  # pod uid -> recreated at
    # Deployments changed (rollout, park, unpark): key -> (the generation the change was
    # made on, when). Until the watch shows a later generation the change is in flight
    # and the workload not settled, whatever the cache says.
    changed: dict[str, tuple[int, float]] = field(default_factory=dict)
    warned: dict[tuple[str, str], float] = field(default_factory=dict)  # (workload, reason)
    backoff: dict[str, Backoff] = field(default_factory=dict)  # by Workload.key

    # --- what the watches show ---------------------------------------------------------

    def observe_pod(self, old: PodRecord | None, new: PodRecord | None) -> None:
        if old is not None and (new is None or new.deleting or new.uid != old.uid):
            self.evicted.pop(old.uid, None)  # the watch shows it leaving

    def observe_deployment(self, key: str, new: DeploymentRecord | None) -> None:
        if new is None:
            self.changed.pop(key, None)
            return
        mark = self.changed.get(key)
        if mark is not None and new.generation > mark[0]:
            del self.changed[key]

    async def recorded_owners(
        self, owners: Sequence[tuple[str, str, str]]
    ) -> list[dict[str, Any]] | None:
        """The StatefulSets and bare ReplicaSets (kind, namespace, name) as the apiserver
        returns them, for the moves recorded on them (not watched with their annotations:
        read once at the start of a term); a deleted one is left out; None if one could
        not be read."""
        objs: list[dict[str, Any]] = []
        for kind, namespace, name in owners:
            read = (
                self.apps.read_namespaced_replica_set_without_preload_content
                if kind == Kind.REPLICA_SET.value
                else self.apps.read_namespaced_stateful_set_without_preload_content
            )
            try:
                resp = await read(name, namespace, _request_timeout=10)
                try:
                    status, body = resp.status, await resp.read()
                finally:
                    resp.release()
            except Exception as exc:
                log.warning("reading %s %s/%s for its move record: %s", kind, namespace, name, exc)
                return None
            if status == 404:
                continue  # deleted: nothing to hold
            if status != 200:
                log.warning(
                    "reading %s %s/%s for its move record: HTTP %d", kind, namespace, name, status
                )
                return None
            doc = orjson.loads(body)
            if isinstance(doc, dict):
                objs.append(doc)
        return objs

    def forget(self, uids: set[str]) -> None:
        """Pods the watch shows gone."""
        for uid in uids:
            self.pretend.pop(uid, None)
            self.repinned.pop(uid, None)

    def expire(self, now: float) -> None:
        for owner, (at, _, _) in list(self.evicting.items()):
            if now - at >= IN_FLIGHT:  # owners nobody plans any more (deleted workloads)
                del self.evicting[owner]
        for key in [k for k, b in self.backoff.items() if now - b.until >= BACKOFF_MAX]:
            del self.backoff[key]  # not tried again for long (moot, or deleted): afresh

    def shift(self, by: float) -> None:
        """Every stamp moved by `by` seconds (the wall clock stepped by that much)."""
        self.evicted = {uid: at + by for uid, at in self.evicted.items()}
        self.pretend = {uid: at + by for uid, at in self.pretend.items()}
        self.repinned = {uid: at + by for uid, at in self.repinned.items()}
        self.warned = {k: at + by for k, at in self.warned.items()}
        self.evicting = {o: (at + by, k, u) for o, (at, k, u) in self.evicting.items()}
        self.changed = {k: (gen, at + by) for k, (gen, at) in self.changed.items()}
        self.backoff = {k: replace(b, until=b.until + by) for k, b in self.backoff.items()}

    # --- what is in flight ---------------------------------------------------------------

    def backing_off(self, workload: str, now: float) -> float | None:
        """Until when moves of `workload` (a Workload.key) wait after refusals, or None."""
        entry = self.backoff.get(workload)
        return entry.until if entry is not None and now < entry.until else None

    def _refused(
        self, move: Move, now: float, status: int | None, message: str, wait: float = 0.0
    ) -> None:
        """Back the workload off; not before `wait` (a throttle's Retry-After) either."""
        key = move.workload.key
        entry = self.backoff.get(key)
        delay = BACKOFF_FIRST if entry is None else min(entry.delay * 2, BACKOFF_MAX)
        pause = max(delay, min(wait, BACKOFF_MAX))
        self.backoff[key] = Backoff(now + pause, delay, status)
        if entry is None or entry.status != status:  # once per kind of refusal in a row
            log.warning("%s; not tried again for %.0fs (doubling up to %.0fs)",
                        message, pause, BACKOFF_MAX)  # fmt: skip
        else:
            log.debug("%s; not tried again for %.0fs", message, pause)

    def deployment_in_flight(self, key: str, now: float) -> bool:
        mark = self.changed.get(key)
        return mark is not None and now - mark[1] < IN_FLIGHT

    def leaving(self, pod: ManagedPod, now: float) -> ManagedPod:
        """A pod the watch still shows running but on its way out (evicted, or of a
        Deployment scaled to zero) is leaving: nothing to judge."""
        if pod.workload.kind is Kind.DEPLOYMENT and pod.workload.replicas == 0:
            return replace(pod, deleting=True)
        pretended = self.pretend.get(pod.uid)
        if pretended is not None:
            if now - pretended < self.policy.current.policy.spec.rebalance.cooldown:
                return replace(pod, deleting=True)
            del self.pretend[pod.uid]
        at = self.evicted.get(pod.uid)
        if at is None:
            return pod
        if now - at >= IN_FLIGHT:
            del self.evicted[pod.uid]
            return pod
        return replace(pod, deleting=True)

    def owner_recovering(self, pod: PodRecord, now: float) -> bool:
        """Whether the owner of `pod` still recovers from one of our evictions: the
        evicted replica not yet replaced by a Ready one, or any replica not Ready."""
        if pod.owner is None:
            return False
        owner = (pod.namespace, *pod.owner)
        entry = self.evicting.get(owner)
        if entry is None:
            return False
        at, key, uid = entry
        replicas = [
            self.index.pods[k] for k in self.index.by_owner.get(owner, ()) if k in self.index.pods
        ]
        back = self.index.pods.get(key)
        waiting = (
            (back is None and pod.owner[0] == "StatefulSet")  # recreated under the same name
            or (back is not None and back.uid == uid)  # still the evicted one
            or any(not (r.ready and r.running) for r in replicas)
        )
        if waiting and now - at < IN_FLIGHT:
            return True
        del self.evicting[owner]
        return False

    # --- performing a move -------------------------------------------------------------

    async def apply(self, move: Move, now: float) -> Outcome:
        from kubernetes.aio.client.exceptions import ApiException

        message = move.message()
        labels = (move.reason.value, move.action.value)
        if self.dry_run:
            log.info("dry-run: would %s", message)
            self.metrics.moves.labels(*labels, "dry-run").inc()
            # As if it had moved: the same move is not announced again at once.
            if move.pod is not None:
                if move.action is Action.RECREATE:
                    self.repinned[move.pod.uid] = now
                else:
                    self.pretend[move.pod.uid] = now
            await self._events(move, f"dry-run: would {message}")
            return "dry-run"
        key = f"{move.workload.namespace}/{move.workload.name}"
        generation = self.workloads.generation(key)
        try:
            outcome = await self._act(move, now)
        except ApiException as exc:
            if not refused(exc.status):
                # A 5xx (etcd or webhook timeout, 504 "did not complete"): the write may
                # have committed, as with no answer.
                return self._unknown(move, now, generation, f"{exc.status} {exc.reason}")
            why = f"{exc.status} {exc.reason}".strip()
            wait = answered_retry_after(exc)
            self._refused(move, now, exc.status, f"{message} failed: {why}", wait)
            await self._warn(move, now, MOVE_FAILED, f"could not {message}: {why}")
            outcome = "failed"
        except Exception as exc:
            # No answer (a timeout, a dropped connection): it may have happened.
            return self._unknown(move, now, generation, str(exc))
        if outcome != "ok":
            if outcome in ("failed", "blocked"):
                self.metrics.moves.labels(*labels, "failed").inc()
            return outcome
        self.backoff.pop(move.workload.key, None)
        log.info("%s", message)
        self._in_flight(move, now, generation)
        self.metrics.moves.labels(*labels, "ok").inc()
        await self._events(move, message)
        return "ok"

    def _unknown(self, move: Move, now: float, generation: int | None, why: str) -> Outcome:
        """A move that may have happened (a 5xx, no answer): kept recorded and in flight,
        so it is neither repeated at once nor uncounted."""
        log.warning("%s: outcome unknown (%s); treated as made", move.message(), why)
        self.backoff.pop(move.workload.key, None)
        self._in_flight(move, now, generation)
        self.metrics.moves.labels(move.reason.value, move.action.value, "unknown").inc()
        return "unknown"

    def _in_flight(self, move: Move, now: float, generation: int | None) -> None:
        """Until the watches show a move it must not be made again (the cache still
        shows the Deployment settled or parked, the evicted pod running), and after an
        eviction the owner's other replicas wait until every replica is back."""
        if move.action is Action.RECREATE:
            if move.pod is not None:
                self.repinned[move.pod.uid] = now
        elif move.action is Action.EVICT:
            if move.pod is not None:
                self.evicted[move.pod.uid] = now
                record = self.index.pods.get(f"{move.pod.namespace}/{move.pod.name}")
                if record is not None and record.owner is not None:
                    owner = (record.namespace, *record.owner)
                    self.evicting[owner] = (now, record.key, record.uid)
        elif move.workload.kind is Kind.DEPLOYMENT:
            self._changing(f"{move.workload.namespace}/{move.workload.name}", now, generation)

    def _changing(self, key: str, now: float, generation: int | None) -> None:
        """A change of Deployment `key` was just made on `generation` (read before the
        call: the watch may deliver the change before the call returns)."""
        if generation is not None:
            d = self.workloads.deployments.get(key)
            if d is not None and d.generation > generation:
                return  # the watch already shows it
            self.changed[key] = (generation, now)

    async def _record_on(self, move: Move, now: float) -> dict[str, str]:
        """The annotations that record this move on its workload: the last move (a new
        leader's cooldown) and the bounded list of moves (`cloud4iot explain --history`),
        appended to what the watch cache (Deployment) or a GET (StatefulSet) shows."""
        device = move.pod.facts.device if move.pod else None
        note = MoveNote(now, move.reason.value, move.from_node or "", move.to_node, device)
        w = move.workload
        previous: str | None = None
        if w.kind is Kind.DEPLOYMENT:
            record = self.workloads.deployments.get(f"{w.namespace}/{w.name}")
            previous = record.moves if record is not None else None
        elif w.kind in (Kind.STATEFUL_SET, Kind.REPLICA_SET):
            # Not watched with its annotations: read it (unreadable: the list starts afresh).
            for obj in await self.recorded_owners([(w.kind.value, w.namespace, w.name)]) or ():
                annotations = (obj.get("metadata") or {}).get("annotations") or {}
                previous = annotations.get(MOVES_ANNOTATION)
        return {
            LAST_MOVE_ANNOTATION: move_note_json(note),
            MOVES_ANNOTATION: moves_json(previous, note),
        }

    async def _act(self, move: Move, now: float) -> Outcome:
        """Make the move; "failed" when the cluster refused it without an error."""
        from kubernetes.aio.client.exceptions import ApiException

        w = move.workload
        if move.action is Action.RECREATE:
            return await self._recreate(move)
        if w.kind is Kind.POD:
            notes: dict[str, str] = {}
        else:
            notes = await self._record_on(move, now)
        if move.action is Action.ROLLOUT:
            stamp = f"{move.reason.value} {move.from_node} -> {move.to_node} at {rfc3339(now)}"
            body: dict[str, Any] = {
                "metadata": {"annotations": notes},
                "spec": {"template": {"metadata": {"annotations": {MOVED_ANNOTATION: stamp}}}},
            }
            await self._patch(w, body)
            return "ok"
        if move.action is Action.PARK:
            parked = {PARKED_ANNOTATION: str(w.replicas), **notes}
            await self._patch(w, {"metadata": {"annotations": parked}, "spec": {"replicas": 0}})
            return "ok"
        if move.action is Action.UNPARK:
            replicas = min(max(w.parked_replicas or 1, 1), MAX_PARKED_REPLICAS)
            restored: dict[str, str | None] = {PARKED_ANNOTATION: None, **notes}
            await self._patch(
                w, {"metadata": {"annotations": restored}, "spec": {"replicas": replicas}}
            )
            return "ok"
        assert move.pod is not None
        pod = move.pod
        try:
            # Bound to the pod judged: a replacement of the same name (a StatefulSet's,
            # made while the plan ran) is not evicted in its stead.
            await self._evict(pod, uid=pod.uid)
        except ApiException as exc:
            if exc.status in (404, 409):  # gone already, or another pod of that name
                log.info("eviction of %s/%s moot: the pod judged is gone (%s)",
                         pod.namespace, pod.name, exc.status)  # fmt: skip
                return "moot"
            if budget_refusal(exc):  # a PodDisruptionBudget says not now
                log.info(
                    "eviction of %s/%s refused by a disruption budget", pod.namespace, pod.name
                )
                self.metrics.held.labels("disruption-budget").inc()
                await self._warn(
                    move,
                    now,
                    MOVE_BLOCKED,
                    f"a PodDisruptionBudget refused the eviction; planned again later: "
                    f"{move.message()}",
                )
                return "blocked"  # not made: planned again later
            raise
        if w.kind in (Kind.DEPLOYMENT, Kind.STATEFUL_SET, Kind.REPLICA_SET):
            with contextlib.suppress(Exception):  # the record helps a new leader; not vital
                await self._patch(w, {"metadata": {"annotations": notes}})
        return "ok"

    async def _recreate(self, move: Move) -> Outcome:
        """The Eviction API, as for moves (no extra RBAC): a Pending pod is evicted
        without a disruption budget check; the uid precondition keeps a replacement of
        the same name safe."""
        from kubernetes.aio.client.exceptions import ApiException

        assert move.pod is not None
        try:
            await self._evict(move.pod, uid=move.pod.uid)
        except ApiException as exc:
            if exc.status in (404, 409):  # gone already, or another pod of that name
                return "moot"
            raise
        return "ok"

    async def _evict(self, pod: ManagedPod, uid: str | None = None) -> None:
        eviction: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
        }
        if uid is not None:
            eviction["deleteOptions"] = {"preconditions": {"uid": uid}}
        await self.core.create_namespaced_pod_eviction(
            pod.name, pod.namespace, eviction, _request_timeout=10
        )

    async def _patch(self, w: Workload, body: dict[str, Any]) -> None:
        if w.kind is Kind.DEPLOYMENT:
            call = self.apps.patch_namespaced_deployment
        elif w.kind is Kind.STATEFUL_SET:
            call = self.apps.patch_namespaced_stateful_set
        else:  # a bare ReplicaSet: a move's record only
            call = self.apps.patch_namespaced_replica_set
        await call(w.name, w.namespace, body, _content_type=MERGE_PATCH, _request_timeout=10)

    async def _warn(self, move: Move, now: float, reason: str, message: str) -> None:
        key = (move.workload.key, reason)
        if now - self.warned.get(key, float("-inf")) < WARN_EVERY:
            return
        self.warned[key] = now
        for k in [k for k, at in self.warned.items() if now - at >= WARN_EVERY]:
            del self.warned[k]  # bounded by the workloads warned about lately
        await self._events(move, message, reason, "Warning")

    async def _events(
        self, move: Move, message: str, reason: str | None = None, event_type: str = "Normal"
    ) -> None:
        targets: list[tuple[str, str, str, str, str | None]] = []
        if move.pod is not None:
            targets.append(("v1", "Pod", move.pod.namespace, move.pod.name, move.pod.uid))
        kind = move.workload.kind
        if kind is not Kind.POD and move.action is not Action.RECREATE:
            api = "apps/v1"
            targets.append((api, kind.value, move.workload.namespace, move.workload.name, None))
        await self._record(targets, reason or move.reason.value, message, event_type)

    async def _record(
        self,
        targets: Sequence[tuple[str, str, str, str, str | None]],
        reason: str,
        message: str,
        event_type: str = "Normal",
    ) -> None:
        """One Event per (apiVersion, kind, namespace, name, uid) target."""
        now = time.time()
        for api_version, kind_name, namespace, name, uid in targets:
            involved = {
                "apiVersion": api_version,
                "kind": kind_name,
                "namespace": namespace,
                "name": name,
            }
            if uid:
                involved["uid"] = uid
            event = event_body(
                involved, namespace, reason, message, now, COMPONENT,
                event_type=event_type, instance=self.identity,
            )  # fmt: skip
            try:
                await self.core.create_namespaced_event(namespace, event, _request_timeout=10)
            except Exception as exc:  # an Event is a courtesy; the move stands
                log.warning(
                    "could not record event on %s %s/%s: %s", kind_name, namespace, name, exc
                )
