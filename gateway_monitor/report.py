"""This gateway's GatewayReport: the body of its status and the one write that sends it.

One object per gateway node, named as the node (docs/gateway-writes.md, section 1):
the monitor replaces the whole of its status (every device it hears now) with a JSON
merge patch under its one field manager ``cloud4iot-gateway-monitor/<node>``. Nobody
else writes `observedAt`, `heard` or `sightings` (an atomic list, which a merge patch
replaces whole), so each write replaces or empties our list.

A merge patch and not a server-side apply: the apiserver reads an apply's body with
its YAML parser, and a forced apply by the only writer buys nothing over a patch. At
hospital density (reports of ~150 entries) the YAML parsing alone was 14 % of the
apiserver's CPU at rest (BENCHMARKS.md, "What a report write costs the apiserver").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloud4iot.devices import (
    API_VERSION,
    GROUP,
    MERGE_PATCH,
    REPORT_KIND,
    REPORT_PLURAL,
    VERSION,
    gateway_field_manager,
    rfc3339,
)


def report_body(node: str, heard: Mapping[str, tuple[int, float]], now: float) -> dict[str, Any]:
    """The report we write: device -> (rssi, lastSeen epoch) for every device heard now."""
    entries = [
        {"device": device, "rssi": rssi, "lastSeen": rfc3339(seen)}
        for device, (rssi, seen) in sorted(heard.items())
    ]
    return {
        "apiVersion": API_VERSION,
        "kind": REPORT_KIND,
        "metadata": {"name": node},
        "status": {"observedAt": rfc3339(now), "heard": len(entries), "sightings": entries},
    }


async def write_report(api: Any, node: str, body: Mapping[str, Any]) -> None:
    """One merge patch of our report's status (404 until the controller made it)."""
    await api.patch_cluster_custom_object_status(
        GROUP,
        VERSION,
        REPORT_PLURAL,
        node,
        {"status": body["status"]},
        field_manager=gateway_field_manager(node),
        _content_type=MERGE_PATCH,
    )


def own_sightings(obj: Mapping[str, Any]) -> dict[str, tuple[int, str]]:
    """device -> (rssi, lastSeen) of a report as read back (start-up adoption)."""
    out: dict[str, tuple[int, str]] = {}
    status = obj.get("status")
    entries = status.get("sightings") if isinstance(status, Mapping) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        device, rssi, seen = entry.get("device"), entry.get("rssi"), entry.get("lastSeen")
        if isinstance(device, str) and isinstance(rssi, int) and not isinstance(rssi, bool):
            out[device] = (rssi, seen if isinstance(seen, str) else "")
    return out
