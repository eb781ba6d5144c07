"""A Warning Event when a policy reload is refused (issue 22 item 4).

An admin who edits the `cloud4iot-policy` ConfigMap badly sees nothing change: the
last good policy stays in force. /readyz and the reload counter say so, but an admin
looks at Events. So each component that refuses a reload records a `PolicyRefused`
Warning on its own Pod (`kubectl describe pod`, `kubectl get events`), naming the
file, line and field of the first problems and the policy it keeps.

On its own Pod, not on the ConfigMap: the components are not granted ConfigMaps
(tests/layout/test_rbac.py), and `kubectl describe` finds Events by the object's uid,
which the Downward API gives for the Pod only (POD_NAME, POD_NAMESPACE, POD_UID).
Without those (a host process) no Event is recorded; the log line stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cloud4iot.events import MESSAGE_MAX, event_body

log = logging.getLogger(__name__)

REASON = "PolicyRefused"


# What is read of cloud4iot.policy's PolicyStore (the kernel's policy package is a leaf
# that imports nothing of ours; nothing here imports it either).
class Refusal(Protocol):
    @property
    def problems(self) -> Sequence[object]: ...  # each prints as file:line: field: message


class InForce(Protocol):
    @property
    def version(self) -> str: ...


class RefusingStore(Protocol):
    @property
    def reloads_failed(self) -> int: ...

    @property
    def last_error(self) -> Refusal | None: ...

    @property
    def current(self) -> InForce: ...


SHOWN = 5  # problems quoted in the message; the rest are counted


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str
    uid: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> PodRef | None:
        """This process's Pod from the Downward API variables, or None outside a Pod."""
        namespace, name = env.get("POD_NAMESPACE", ""), env.get("POD_NAME", "")
        if not (namespace and name):
            return None
        return cls(namespace, name, env.get("POD_UID", ""))


def refused_message(error: Refusal, keeping: str) -> str:
    """What was wrong (file:line: field: message), first problems first, and what stays."""
    shown = "; ".join(str(p) for p in error.problems[:SHOWN])
    more = len(error.problems) - SHOWN
    tail = f" (and {more} more)" if more > 0 else ""
    return f"policy reload refused, keeping {keeping}: {shown}{tail}"[:MESSAGE_MAX]


def refused_event(
    pod: PodRef, component: str, instance: str, message: str, now: float
) -> dict[str, Any]:
    """The core/v1 Event for one refusal, on `pod`."""
    involved = {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace, "name": pod.name}
    if pod.uid:
        involved["uid"] = pod.uid
    return event_body(
        involved, pod.namespace, REASON, message, now, component,
        event_type="Warning", instance=instance,
    )  # fmt: skip


async def report_refusals(
    core: Any,  # kubernetes.aio CoreV1Api
    store: RefusingStore,
    pod: PodRef,
    component: str,
    interval: float,
    clock: Callable[[], float],
) -> None:
    """Forever: one Event per refusal the store counts (a file refused for the same
    bytes is counted once; several refusals within `interval`: the latest one)."""
    reported = 0  # refusals since the process started, so one before we ran counts too
    while True:
        failed, error = store.reloads_failed, store.last_error
        if failed != reported and error is not None:
            message = refused_message(error, store.current.version)
            body = refused_event(pod, component, pod.name, message, clock())
            try:
                await core.create_namespaced_event(pod.namespace, body, _request_timeout=10)
                reported = failed
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the refusal stands either way; try again next round
                log.warning("could not record %s on pod %s: %s", REASON, pod.name, exc)
        elif error is None:
            reported = failed  # good again: a refusal cleared before we saw it is moot
        await asyncio.sleep(interval)
