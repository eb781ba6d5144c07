"""The elected discovery controller: the I/O around discovery_plan (issue 25).

Each pass (one a second) reads the gateways' candidates (GatewayReports of labelled
gateways only), the DeviceClasses, the discovered Devices and the sightings merged in
the Snapshot; creates the Devices the plan admits, deletes those it forgets, and makes
the function Deployments of every admitted Device a labelled gateway reports a sighting
of (so their pods find the gateway that hears it), once per leadership term (a create
that finds the Deployment answers 409: nothing to do). Deleting a Device removes its
Deployments through the garbage collector (ownerReferences), deleting a class its
Devices.

When a Device was last heard is kept in memory: a new leader counts every discovered
Device as heard when its term began, so a failover can only delay a forget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud4iot.deviceclass import CLASS_PLURAL, DeviceClass, parse_class
from cloud4iot.devices import API_VERSION, GROUP, KIND, PLURAL, VERSION, parse_time, rfc3339
from cloud4iot.vocabulary import APPROVAL_APPROVED, APPROVAL_LABEL, CLASS_LABEL
from extender.controllers.discovery_plan import (
    Discovered,
    function_deployments,
    new_device,
    plan_discovery,
)
from extender.state.kube import Reflector
from extender.state.reports import ReportFacts, gateway_nodes
from extender.state.store import StateStore

log = logging.getLogger(__name__)

PASS = 1.0
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


@dataclass(slots=True, eq=False)
class DiscoveryController:
    custom: Any  # kubernetes.aio CustomObjectsApi
    apps: Any  # kubernetes.aio AppsV1Api
    store: StateStore
    reports: Reflector[ReportFacts]
    classes: Reflector[DeviceClass]
    discovered: Reflector[Discovered]
    core: Any = None  # kubernetes.aio CoreV1Api: the Events (None: none recorded)
    interval: float = PASS
    clock: Callable[[], float] = time.time
    last_heard: dict[str, float] = field(default_factory=dict)
    instantiated: set[str] = field(default_factory=set)  # Device uids, this term
    failing: dict[str, str] = field(default_factory=dict)  # what -> error (one log line each)
    writes: int = 0  # creates and deletes sent (the bench counts them)

    async def run(self) -> None:
        self.last_heard.clear()
        self.instantiated.clear()
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
        now = self.clock()
        gateways = gateway_nodes(snapshot.nodes)
        for name in self.discovered.facts:
            facts = snapshot.devices.get(name)
            heard = (
                max((s.last_seen for s in facts.sightings.values()), default=None)
                if facts
                else None
            )
            if heard is not None:
                self.last_heard[name] = max(heard, self.last_heard.get(name, heard))
            else:
                self.last_heard.setdefault(name, term_start)
        for name in list(self.last_heard):
            if name not in self.discovered.facts:
                del self.last_heard[name]
        candidates = [
            c for node, r in self.reports.facts.items() if node in gateways for c in r.candidates
        ]
        registered = [d.address for d in snapshot.devices.values() if d.address]
        plan = plan_discovery(
            self.classes.facts, candidates, registered, self.discovered.facts, self.last_heard, now
        )
        for new in plan.create:
            cls = self.classes.facts[new.device_class]
            request = self.custom.create_cluster_custom_object(
                GROUP, VERSION, PLURAL, new_device(new, cls)
            )
            if await self._call(f"create Device {new.name}", request):
                await self._event(
                    new.name,
                    "Discovered",
                    f"heard by {new.node}, class {new.device_class}, {new.approval}",
                )
                log.info(
                    "discovered %s (class %s, %s) heard by %s",
                    new.name,
                    new.device_class,
                    new.approval,
                    new.node,
                )
        for name in plan.forget:
            # read before the delete: its watch event may remove the Device meanwhile
            cls = self.classes.facts[self.discovered.facts[name].device_class]
            if await self._call(
                f"delete Device {name}",
                self.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name),
            ):
                await self._event(
                    name, "Forgotten", f"no gateway heard it for {cls.forget_after:.0f}s"
                )
                log.info("forgot discovered Device %s (unheard)", name)
        for device in list(self.discovered.facts.values()):
            dclass = self.classes.facts.get(device.device_class)
            if dclass is None or device.approval != APPROVAL_APPROVED or not device.uid:
                continue
            if device.uid in self.instantiated:
                continue
            facts = snapshot.devices.get(device.name)
            if facts is None or not facts.sightings:
                # Not before a gateway tracks it as a Device: a pod created earlier would
                # find no gateway hearing it and fall back to another tier.
                continue
            ok = True
            for body in function_deployments(dclass, device):
                ok &= await self._call(
                    f"create Deployment {body['metadata']['namespace']}/{body['metadata']['name']}",
                    self.apps.create_namespaced_deployment(body["metadata"]["namespace"], body),
                )
            if ok:
                self.instantiated.add(device.uid)
                names = ", ".join(f.name for f in dclass.functions)
                await self._event(device.name, "Instantiated", f"functions: {names}", device.uid)
                log.info("instantiated %d functions of %s", len(dclass.functions), device.name)

    async def _event(self, device: str, reason: str, message: str, uid: str = "") -> None:
        """An Event on the Device (in `default`, as for other cluster-scoped objects)."""
        if self.core is None:
            return
        stamp = rfc3339(self.clock())
        involved = {"apiVersion": API_VERSION, "kind": KIND, "name": device}
        if uid:
            involved["uid"] = uid
        event = {
            "metadata": {"generateName": f"{device}.", "namespace": EVENT_NAMESPACE},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.core.create_namespaced_event(EVENT_NAMESPACE, event, _request_timeout=10)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an Event is a courtesy; the write stands
            log.warning("could not record %s on Device %s: %s", reason, device, type(exc).__name__)

    async def _call(self, what: str, request: Any) -> bool:
        """Send one write; True when done or already so (409 create, 404 delete)."""
        from kubernetes.aio.client.exceptions import ApiException

        self.writes += 1
        try:
            await request
        except asyncio.CancelledError:
            raise
        except ApiException as exc:
            if exc.status in (404, 409):
                self.failing.pop(what, None)
                return True
            self._failed(what, f"HTTP {exc.status} {exc.reason}")
            return False
        except Exception as exc:
            self._failed(what, type(exc).__name__)
            return False
        self.failing.pop(what, None)
        return True

    def _failed(self, what: str, error: str) -> None:
        if self.failing.get(what) != error:
            log.warning("could not %s: %s (retrying)", what, error)
        self.failing[what] = error
