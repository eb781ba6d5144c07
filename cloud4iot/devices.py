"""The Device contract both deployables share (devices.cloud4iot.io).

Names, time formats, RSSI bounds and field managers in one place: the gateway
monitor writes what the extender reads. Standard library only, so importing it
costs the gateway image nothing of the extender's dependencies.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from typing import Any

GROUP = "cloud4iot.io"
VERSION = "v1alpha1"
PLURAL = "devices"
KIND = "Device"
API_VERSION = f"{GROUP}/{VERSION}"

# GatewayReport (gatewayreports.cloud4iot.io): what one gateway hears, one object
# per gateway node named as the node; the monitor on that node writes its status
# only (docs/gateway-writes.md).
REPORT_PLURAL = "gatewayreports"
REPORT_KIND = "GatewayReport"
# How many devices one report may list (the CRD's maxItems).
REPORT_MAX_SIGHTINGS = 1024

# The gateway monitors' namespace as shipped (manifests/gateway-monitor/): their
# liveness Leases and the Secret of the wearables' Identity Resolving Keys live there.
GATEWAY_NAMESPACE = "cloud4iot-gateway"
# That Secret: `data` keyed by Device name, each value the Device's IRK as 32 hex
# digits. Readable by the monitors' ServiceAccount only (and admins); written by
# `cloud4iot devices approve NAME --irk HEX` (docs/security.md). Devices are
# readable by many roles, so an IRK in a Device's spec (the deprecated
# spec.identityKey) lets all of them follow the wearable.
IDENTITY_KEYS_SECRET = "cloud4iot-identity-keys"

# What a BLE radio can report (dBm); the CRD enforces the same range.
RSSI_MIN = -127
RSSI_MAX = 20

# Server-side apply field managers: one per gateway for its own sighting, one for
# the elected writer of status.nearest.
EXTENDER_FIELD_MANAGER = "cloud4iot-extender"
GATEWAY_FIELD_MANAGER_PREFIX = "cloud4iot-gateway-monitor/"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


def gateway_field_manager(node: str) -> str:
    return GATEWAY_FIELD_MANAGER_PREFIX + node


def rfc3339(epoch: float) -> str:
    """Epoch seconds as the apiserver writes date-time fields (second precision, UTC)."""
    return _rfc3339_second(math.floor(epoch))


# Cached: every gateway writes a lastSeen per apply and the extender parses one per
# sighting per Device event, mostly the same few seconds (replay's profile, BENCHMARKS).
@functools.lru_cache(maxsize=4096)
def _rfc3339_second(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=4096)
def _parse_text(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_time(value: Any) -> float | None:
    """RFC 3339 (as the apiserver writes it) or epoch seconds to epoch seconds; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        return _parse_text(value)
    return None
