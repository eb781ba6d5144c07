"""The elected discovery controller: the I/O around discovery_plan (issue 25).

Each pass (one a second) reads the gateways' candidates (GatewayReports of labelled
gateways only), the DeviceClasses, the discovered Devices and the sightings merged in
the Snapshot; creates the Devices the plan admits, deletes those it forgets, and makes
the function Deployments of every admitted Device a labelled gateway reports a sighting
of (so their pods find the gateway that hears it), once per leadership term (a create
that finds the Deployment answers 409: nothing to do, or restore it if its class parked
it). A Device unheard for its class's awayAfter has its Deployments parked (scaled to
zero, the count saved in DISCOVERY_PARKED_ANNOTATION) or deleted (`whenAway`); heard
again, they come back and the extender places their pods on the gateway that hears it.
Deleting a Device removes its Deployments through the garbage collector
(ownerReferences), deleting a class its Devices.

When a Device was last heard is kept in memory: a new leader counts every discovered
Device as heard when its term began, so a failover can only delay a forget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cloud4iot.deviceclass import CLASS_PLURAL, DELETE, DeviceClass, parse_class
from cloud4iot.devices import API_VERSION, GROUP, KIND, PLURAL, VERSION, parse_time
from cloud4iot.events import event_body
from cloud4iot.policy.store import PolicyStore
from cloud4iot.replicas import MAX_PARKED_REPLICAS, saved_count
from cloud4iot.vocabulary import (
    APPROVAL_APPROVED,
    APPROVAL_LABEL,
    CLASS_LABEL,
    DISCOVERY_PARKED_ANNOTATION,
)
from extender.controllers.discovery_plan import (
    Discovered,
    function_deployments,
    new_device,
    plan_discovery,
    plan_lifecycle,
)
from extender.state.kube import Reflector
from extender.state.liveness import heard_at
from extender.state.reports import ReportFacts, gateway_nodes
from extender.state.store import StateStore

log = logging.getLogger(__name__)

PASS = 1.0
# How long a Device we created may stay out of the watch before it no longer counts
# toward its class's cap (deleted by someone meanwhile, or a watch far behind).
UNSEEN_FOR = 60.0
# A write that keeps failing (a template the apiserver or an admission policy refuses,
# a namespace missing) is retried after 1 s, doubling to 60 s: each pass resent every
# one of them, up to maxDevices x 8 functions a second for as long as the class stood.
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
# Per request: without one the client waits 5 minutes for an answer, and a connection
# the apiserver never answers held every Device's pass that long.
REQUEST_TIMEOUT = 10.0
EVENT_NAMESPACE = "default"
COMPONENT = "cloud4iot-extender"


def discovered_facts(obj: Mapping[str, Any], observed_at: float = 0.0) -> Discovered:
    """A Device carrying CLASS_LABEL; ValueError otherwise."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    name, cls = meta.get("name"), labels.get(CLASS_LABEL)
    address = (obj.get("spec") or {}).get("address")
    if not (isinstance(name, str) and isinstance(cls, str) and isinstance(address, str)):
        raise ValueError("not a discovered Device")
    return Discovered(
        name=name,
        uid=str(meta.get("uid", "")),
        address=address.upper(),
        device_class=cls,
        approval=str(labels.get(APPROVAL_LABEL, "")),
        created=parse_time(meta.get("creationTimestamp")) or observed_at,
    )


def discovery_reflectors(custom: Any) -> tuple[Reflector[DeviceClass], Reflector[Discovered]]:
    classes: Reflector[DeviceClass] = Reflector(
        "deviceclasses",
        lambda **kw: custom.list_cluster_custom_object_without_preload_content(
            GROUP, VERSION, CLASS_PLURAL, **kw
        ),
        parse_class,
        None,
    )
    discovered: Reflector[Discovered] = Reflector(
        "discovered-devices",
        lambda **kw: custom.list_cluster_custom_object_without_preload_content(
            GROUP, VERSION, PLURAL, label_selector=CLASS_LABEL, **kw
        ),
        discovered_facts,
        None,
    )
    return classes, discovered


def saved_replicas(saved: str) -> int:
    """The replicas a park saved, 1..MAX_PARKED_REPLICAS; 1 for garbage."""
    count = saved_count(saved)
    return 1 if count is None else min(max(count, 1), MAX_PARKED_REPLICAS)


@dataclass(slots=True, eq=False)
class DiscoveryController:
    custom: Any  # kubernetes.aio CustomObjectsApi
    apps: Any  # kubernetes.aio AppsV1Api
    store: StateStore
    reports: Reflector[ReportFacts]
    classes: Reflector[DeviceClass]
    discovered: Reflector[Discovered]
    core: Any = None  # kubernetes.aio CoreV1Api: the Events (None: none recorded)
    # The policy's sightingMaxAge: a sighting still reported and younger than it is
    # "heard" now, as the scorer counts it (None: only lastSeen counts).
    policy: PolicyStore | None = None
    # Each gateway's last renewal we saw (SightingIndex.alive_at, kept current by the
    # Lease watch); None: candidates are judged by their own lastSeen alone.
    alive: Mapping[str, float] | None = None
    interval: float = PASS
    clock: Callable[[], float] = time.time
    request_timeout: float = REQUEST_TIMEOUT
    last_heard: dict[str, float] = field(default_factory=dict)
    placed: set[str] = field(default_factory=set)  # Device uids given functions, this term
    stowed: set[str] = field(default_factory=set)  # ... whose functions were parked/deleted
    revoked: set[str] = field(default_factory=set)  # ... denied: functions deleted
    failing: dict[str, str] = field(default_factory=dict)  # what -> error (one log line each)
    tried: set[str] = field(default_factory=set)  # what the last synced pass sent
    # what -> (delay, next attempt) of the writes in `failing`
    backoff: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Devices this controller created that the watch has not shown yet -> (class,
    # address, when): counted toward their class's cap, and their address as taken
    # (another class matching it would make a second Device), until seen, or for
    # UNSEEN_FOR at most.
    unseen: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    writes: int = 0  # creates, deletes and patches sent (the bench counts them)

    async def run(self) -> None:
        self.last_heard.clear()
        self.placed.clear()
        self.stowed.clear()
        self.revoked.clear()
        self.unseen.clear()
        started = self.clock()
        while True:
            try:
                await self.step(started)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug here must not end the term of the nearest writer beside it.
                log.exception("discovery pass failed; next pass in %.0fs", self.interval)
            await asyncio.sleep(self.interval)

    def _fresh_for(self) -> float:
        """How long a reported sighting counts as heard (the policy's sightingMaxAge)."""
        if self.policy is None:
            return -1.0  # only lastSeen counts
        return float(self.policy.current.policy.spec.stale_data.sighting_max_age)

    async def step(self, term_start: float = 0.0) -> None:
        snapshot = self.store.snapshot
        if not (
            snapshot.nodes_synced
            and snapshot.devices_synced
            and self.reports.synced
            and self.classes.synced
            and self.discovered.synced
        ):
            return
        # A failure the last pass did not retry (its Device or class gone since) is
        # forgotten: with rotating addresses the map would otherwise keep them all.
        self.failing = {what: e for what, e in self.failing.items() if what in self.tried}
        self.backoff = {w: b for w, b in self.backoff.items() if w in self.failing}
        self.tried = set()
        now = self.clock()
        gateways = gateway_nodes(snapshot.nodes)
        # Copies: the watches may change them while this pass awaits its writes (a
        # Device or class deleted meanwhile must not end the pass with a KeyError).
        discovered, classes = dict(self.discovered.facts), dict(self.classes.facts)
        for name in discovered:
            facts = snapshot.devices.get(name)
            heard = (
                max((s.last_seen for s in facts.sightings.values()), default=None)
                if facts
                else None
            )
            # A quiet present device's lastSeen moves only with its gateway's Lease
            # renewals (10 s): an awayAfter or forgetAfter shorter than that would park
            # or forget a device that is still heard.
            if heard is not None and now - heard <= self._fresh_for():
                heard = now
            if heard is not None:
                self.last_heard[name] = max(heard, self.last_heard.get(name, heard))
            else:
                self.last_heard.setdefault(name, term_start)
        for name in list(self.last_heard):
            if name not in discovered:
                del self.last_heard[name]
        # Only this term's live Devices: with rotating addresses, every forgotten
        # Device's uid would stay for the whole term.
        uids = {d.uid for d in discovered.values()}
        self.placed &= uids
        self.stowed &= uids
        self.revoked &= uids
        # A listed candidate of a gateway alive now counts as heard now, as sightings do
        # (the monitor lists only what it heard within its 30 s TTL): its own lastSeen
        # is the gateway's clock, and one running a minute behind had nothing ever
        # discovered (found in review, 2026-12-07). A gateway not alive: its lastSeen.
        alive = self.alive or {}
        candidates = [
            c
            if (seen := heard_at(c.last_seen, alive.get(node))) == c.last_seen
            else replace(c, last_seen=seen)
            for node, r in self.reports.facts.items()
            if node in gateways
            for c in r.candidates
        ]
        self.unseen = {
            n: (c, a, at)
            for n, (c, a, at) in self.unseen.items()
            # both watches: the address is read from the Devices', the name from ours
            if (n not in discovered or n not in snapshot.devices) and now - at <= UNSEEN_FOR
        }
        registered = [d.address for d in snapshot.devices.values() if d.address]
        registered += [a for _, a, _ in self.unseen.values()]
        plan = plan_discovery(
            classes,
            candidates,
            registered,
            discovered,
            self.last_heard,
            now,
            unseen={n: cls_name for n, (cls_name, _, _) in self.unseen.items()},
        )
        for new in plan.create:
            cls = classes[new.device_class]
            request = self.custom.create_cluster_custom_object(
                GROUP, VERSION, PLURAL, new_device(new, cls), _request_timeout=self.request_timeout
            )
            if await self._call(f"create Device {new.name}", request, already=(409,)):
                self.unseen[new.name] = (new.device_class, new.address, now)
                await self._event(
                    new.name,
                    "Discovered",
                    f"heard by {new.node}, class {new.device_class}, {new.approval}",
                )
                if new.approval == APPROVAL_APPROVED:
                    await self._event(new.name, "Approved", "admission auto")
                log.info(
                    "discovered %s (class %s, %s) heard by %s",
                    new.name,
                    new.device_class,
                    new.approval,
                    new.node,
                )
        for name in plan.forget:
            # read before the delete: its watch event may remove the Device meanwhile
            cls = classes[discovered[name].device_class]
            if await self._call(
                f"delete Device {name}",
                self.custom.delete_cluster_custom_object(
                    GROUP, VERSION, PLURAL, name, _request_timeout=self.request_timeout
                ),
            ):
                await self._event(
                    name, "Forgotten", f"no gateway heard it for {cls.forget_after:.0f}s"
                )
                log.info("forgot discovered Device %s (unheard)", name)
        newest = {
            name: max(s.last_seen for s in facts.sightings.values())
            for name in discovered
            if (facts := snapshot.devices.get(name)) is not None and facts.sightings
        }
        life = plan_lifecycle(
            classes,
            discovered,
            newest,
            self.last_heard,
            now,
            self.placed,
            self.stowed,
            plan.forget,
            self.revoked,
        )
        for name in life.stow:
            device = discovered[name]
            if await self._stow(classes[device.device_class], device, now):
                self.stowed.add(device.uid)
                self.placed.discard(device.uid)
        for name in life.revoke:
            device = discovered[name]
            if await self._revoke(classes[device.device_class], device):
                self.revoked.add(device.uid)
                self.stowed.discard(device.uid)
                self.placed.discard(device.uid)
        for name in life.place:
            device = discovered[name]
            facts = snapshot.devices.get(name)
            heard_by = sorted(facts.sightings) if facts else []
            if await self._place(classes[device.device_class], device, heard_by):
                self.placed.add(device.uid)
                self.stowed.discard(device.uid)
                self.revoked.discard(device.uid)

    async def _place(self, cls: DeviceClass, device: Discovered, heard_by: list[str]) -> bool:
        """Create the Device's functions, or restore those its class parked; True when done."""
        created: list[str] = []
        restored: list[str] = []
        ok = True
        for body in function_deployments(cls, device):
            ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
            # 409 only: a create's 404 is its namespace missing, not the Deployment there
            done = await self._call(
                f"create Deployment {ns}/{name}",
                self.apps.create_namespaced_deployment(
                    ns, body, _request_timeout=self.request_timeout
                ),
                already=(409,),
            )
            if done is None:
                ok = False
            elif done:
                created.append(name)
            else:  # 409: it exists; parked by its class?
                back = await self._unpark(ns, name)
                if back is None:
                    ok = False
                elif back:
                    restored.append(name)
        where = ", ".join(heard_by) or "?"
        if created:
            names = ", ".join(f.name for f in cls.functions)
            await self._event(device.name, "Instantiated", f"functions: {names}", device.uid)
            log.info("instantiated %d functions of %s", len(created), device.name)
        if restored:
            await self._event(
                device.name,
                "Restored",
                f"heard by {where}: {', '.join(restored)} scaled back up",
                device.uid,
            )
            log.info("restored the parked functions of %s (heard by %s)", device.name, where)
        return ok

    async def _stow(self, cls: DeviceClass, device: Discovered, now: float) -> bool:
        """Park (scale to zero) or delete the functions of a Device unheard for awayAfter."""
        away = now - self.last_heard.get(device.name, now)
        done: list[str] = []
        ok = True
        for body in function_deployments(cls, device):
            ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
            if cls.when_away == DELETE:
                result = await self._call(
                    f"delete Deployment {ns}/{name}",
                    self.apps.delete_namespaced_deployment(
                        name, ns, _request_timeout=self.request_timeout
                    ),
                )
            else:
                result = await self._park(ns, name)
            if result is None:
                ok = False
            elif result:
                done.append(name)
        if done:
            reason, verb = (
                ("Removed", "deleted") if cls.when_away == DELETE else ("Parked", "scaled to zero")
            )
            await self._event(
                device.name,
                reason,
                f"no gateway heard it for {away:.0f}s (awayAfter {cls.away_after:.0f}s): "
                f"{', '.join(done)} {verb}",
                device.uid,
            )
            log.info("%s the functions of %s (unheard %.0fs)", verb, device.name, away)
        return ok

    async def _revoke(self, cls: DeviceClass, device: Discovered) -> bool:
        """Delete the functions of a Device no longer approved; True when none is left."""
        done: list[str] = []
        ok = True
        for body in function_deployments(cls, device):
            ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
            result = await self._call(
                f"delete Deployment {ns}/{name}",
                self.apps.delete_namespaced_deployment(
                    name, ns, _request_timeout=self.request_timeout
                ),
            )
            if result is None:
                ok = False
            elif result:
                done.append(name)
        if done:
            await self._event(
                device.name,
                "Removed",
                f"approval {device.approval or 'removed'}: {', '.join(done)} deleted",
                device.uid,
            )
            log.info("deleted the functions of %s (%s)", device.name, device.approval)
        return ok

    async def _park(self, namespace: str, name: str) -> bool | None:
        """Scale to zero, saving the replica count; False when there was nothing to park
        (gone, already at zero: parked by us or by the rebalancer), None on failure."""
        dep = await self._read(namespace, name)
        if dep is None or dep is False:
            return None if dep is None else False
        replicas = dep.spec.replicas if dep.spec.replicas is not None else 1
        if replicas == 0:
            return False
        patch = {
            "metadata": {
                "resourceVersion": dep.metadata.resource_version,
                "annotations": {DISCOVERY_PARKED_ANNOTATION: str(replicas)},
            },
            "spec": {"replicas": 0},
        }
        done = await self._call(
            f"park Deployment {namespace}/{name}",
            self.apps.patch_namespaced_deployment(
                name, namespace, patch, _request_timeout=self.request_timeout
            ),
            already=(404,),
        )
        return None if done is None else done

    async def _unpark(self, namespace: str, name: str) -> bool | None:
        """Restore what _park saved; False when it is not parked by its class."""
        dep = await self._read(namespace, name)
        if dep is None or dep is False:
            return None if dep is None else False
        saved = (dep.metadata.annotations or {}).get(DISCOVERY_PARKED_ANNOTATION)
        if saved is None:
            return False
        replicas = saved_replicas(saved)
        patch = {
            "metadata": {
                "resourceVersion": dep.metadata.resource_version,
                "annotations": {DISCOVERY_PARKED_ANNOTATION: None},
            },
            "spec": {"replicas": replicas},
        }
        done = await self._call(
            f"restore Deployment {namespace}/{name}",
            self.apps.patch_namespaced_deployment(
                name, namespace, patch, _request_timeout=self.request_timeout
            ),
            already=(404,),
        )
        return None if done is None else done

    async def _read(self, namespace: str, name: str) -> Any:
        """The Deployment; False when it does not exist; None on failure."""
        outcome, dep = await self._send(
            f"read Deployment {namespace}/{name}",
            self.apps.read_namespaced_deployment(
                name, namespace, _request_timeout=self.request_timeout
            ),
            already=(404,),
        )
        return dep if outcome else outcome

    async def _event(self, device: str, reason: str, message: str, uid: str = "") -> None:
        """An Event on the Device (in `default`, as for other cluster-scoped objects)."""
        if self.core is None:
            return
        involved = {"apiVersion": API_VERSION, "kind": KIND, "name": device}
        if uid:
            involved["uid"] = uid
        event = event_body(involved, EVENT_NAMESPACE, reason, message, self.clock(), COMPONENT)
        try:
            await self.core.create_namespaced_event(EVENT_NAMESPACE, event, _request_timeout=10)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an Event is a courtesy; the write stands
            log.warning("could not record %s on Device %s: %s", reason, device, type(exc).__name__)

    async def _call(
        self, what: str, request: Any, already: tuple[int, ...] = (404, 409)
    ) -> bool | None:
        """Send one write: True when done, False when already so (`already`: 409 for a
        create, 404 for a delete or patch), None when it failed (logged once; retried
        at a later pass, 1 s doubling to 60 s; a patch's 409 is a conflict, so a failure)."""
        if self._held(what, request):
            return None
        self.writes += 1
        outcome, _ = await self._send(what, request, already)
        return outcome

    def _held(self, what: str, request: Any) -> bool:
        """True (and `request` dropped unsent) while `what` is backing off."""
        wait = self.backoff.get(what)
        if wait is None or self.clock() >= wait[1]:
            return False
        self.tried.add(what)  # still failing: its log line is kept
        request.close()  # a coroutine never awaited would warn
        return True

    async def _send(
        self, what: str, request: Any, already: tuple[int, ...]
    ) -> tuple[bool | None, Any]:
        """Await one request: (True, its result), (False, None) for a status in
        `already`, (None, None) on any other failure (logged once per new error)."""
        from kubernetes.aio.client.exceptions import ApiException

        self.tried.add(what)
        if self._held(what, request):
            return None, None
        try:
            result = await request
        except asyncio.CancelledError:
            raise
        except ApiException as exc:
            if exc.status in already:
                self.failing.pop(what, None)
                self.backoff.pop(what, None)
                return False, None
            self._failed(what, f"HTTP {exc.status} {exc.reason}")
            return None, None
        except Exception as exc:
            self._failed(what, type(exc).__name__)
            return None, None
        self.failing.pop(what, None)
        self.backoff.pop(what, None)
        return True, result

    def _failed(self, what: str, error: str) -> None:
        if self.failing.get(what) != error:
            log.warning(
                "could not %s: %s (retrying, backing off to %.0fs)", what, error, BACKOFF_MAX
            )
        self.failing[what] = error
        delay = min(self.backoff.get(what, (BACKOFF_FIRST / 2, 0.0))[0] * 2, BACKOFF_MAX)
        self.backoff[what] = (delay, self.clock() + delay)
