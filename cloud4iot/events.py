"""The core/v1 Event body every component records (one shape, one place).

Reasons and who records them: docs/operations.md "Events".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloud4iot.devices import rfc3339

MESSAGE_MAX = 1024  # what the apiserver keeps of a message


def event_body(
    involved: Mapping[str, str],
    namespace: str,
    reason: str,
    message: str,
    now: float,
    component: str,
    *,
    event_type: str = "Normal",
    instance: str | None = None,
) -> dict[str, Any]:
    """An Event on `involved` (apiVersion, kind, name, and namespace and uid when
    known), in `namespace`, named after the object."""
    stamp = rfc3339(now)
    body: dict[str, Any] = {
        "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
        "involvedObject": dict(involved),
        "reason": reason,
        "message": message[:MESSAGE_MAX],
        "type": event_type,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    if instance is not None:
        body["reportingInstance"] = instance
    return body
