"""Settings from the environment, and the strap's address from its Device object.

The Deployment names the Device (``DEVICE_NAME``, from the pod's ``cloud4iot.io/device``
annotation through the Downward API) and usually its address too (``DEVICE_ADDRESS``).
Without ``DEVICE_ADDRESS`` the address is read from the cluster-scoped Device object
(``spec.address``) with the pod's service account, which then needs ``get`` on
``devices.cloud4iot.io``.
"""

from __future__ import annotations

import math
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from omh_consolidator.consolidate import Thresholds
from omh_consolidator.pipeline import Mode
from omh_consolidator.queue import FSYNC_POLICIES, FsyncPolicy

ADDRESS = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEVICE_API = "/apis/cloud4iot.io/v1alpha1/devices/"

# Everything read from the environment (bleak and dbus-fast read DBUS_SYSTEM_BUS_ADDRESS).
ENV_VARS = frozenset(
    {
        "DEVICE_NAME",
        "DEVICE_ADDRESS",
        "USER_ID",
        "NODE_NAME",
        "INGEST_URL",
        "MODE",
        "WINDOW_SECONDS",
        "HR_LOW_BPM",
        "HR_HIGH_BPM",
        "ALERT_REPEAT_SECONDS",
        "QUEUE_MAX_BATCHES",
        "QUEUE_MAX_BYTES",
        "QUEUE_DIR",
        "QUEUE_FSYNC",
        "HANDOVER_PEERS",
        "HANDOVER_PORT",
        "POST_TIMEOUT_SECONDS",
        "RETRY_MAX_SECONDS",
        "BLE_ADAPTER",
        "SCAN_TIMEOUT_SECONDS",
        "METRICS_PORT",
        "DRAIN_SECONDS",
        "DBUS_SYSTEM_BUS_ADDRESS",
    }
)


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Config:
    device_name: str
    device_address: str | None  # None: read it from the Device object
    user_id: str
    source_name: str
    ingest_url: str | None  # None: batches go to stdout as JSON lines
    mode: Mode
    window_s: float
    thresholds: Thresholds
    max_queue: int
    max_queue_bytes: int
    queue_dir: Path | None  # None: the queue lives in memory only
    fsync: FsyncPolicy
    handover_peers: tuple[tuple[str, int], ...]  # (host, port) to hand the queue to on SIGTERM
    handover_port: int  # 0: take no handover
    post_timeout_s: float
    retry_cap_s: float
    adapter: str | None
    scan_timeout_s: float
    metrics_port: int  # 0: no metrics server
    drain_s: float


def _float(env: Mapping[str, str], key: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a number") from None
    if not math.isfinite(value):  # nan passed every comparison below; inf is no setting
        raise ConfigError(f"{key}={raw!r} must be a finite number")
    if value < minimum:
        raise ConfigError(f"{key}={raw!r} must be >= {minimum:g}")
    return value


def _int(env: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    value = float(_float(env, key, default, minimum))
    if not value.is_integer():
        raise ConfigError(f"{key}={env.get(key)!r} must be a whole number")
    return int(value)


def normalise_address(raw: str, where: str) -> str:
    address = raw.strip().upper().replace("-", ":")
    if not ADDRESS.match(address):
        raise ConfigError(f"{where}: {raw!r} is not a BLE address like C0:FF:EE:00:00:42")
    return address


def _peers(raw: str, default_port: int) -> tuple[tuple[str, int], ...]:
    peers: list[tuple[str, int]] = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host:
            host, port = item, str(default_port)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"HANDOVER_PEERS: {item!r} is not host[:port]")
        peers.append((host.strip("[]"), int(port)))
    return tuple(peers)


def from_env(env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    device = env.get("DEVICE_NAME", "").strip()
    raw_address = env.get("DEVICE_ADDRESS", "").strip()
    if not device and not raw_address:
        raise ConfigError("set DEVICE_NAME (the Device object) and/or DEVICE_ADDRESS")
    address = normalise_address(raw_address, "DEVICE_ADDRESS") if raw_address else None
    mode = env.get("MODE", "consolidate").strip() or "consolidate"
    if mode not in ("consolidate", "raw"):
        raise ConfigError(f"MODE={mode!r}: use consolidate or raw")
    try:
        thresholds = Thresholds(
            low_bpm=_int(env, "HR_LOW_BPM", 40),
            high_bpm=_int(env, "HR_HIGH_BPM", 150),
            repeat_s=_float(env, "ALERT_REPEAT_SECONDS", 60.0),
        )
    except ValueError as exc:
        raise ConfigError(f"alert thresholds: {exc}") from None
    window = _float(env, "WINDOW_SECONDS", 60.0)
    if window <= 0:
        raise ConfigError("WINDOW_SECONDS must be > 0")
    fsync = env.get("QUEUE_FSYNC", "").strip() or "group"
    if fsync not in FSYNC_POLICIES:
        raise ConfigError(f"QUEUE_FSYNC={fsync!r}: use {', '.join(FSYNC_POLICIES)}")
    queue_dir = env.get("QUEUE_DIR", "").strip()
    handover_port = _int(env, "HANDOVER_PORT", 9104)
    metrics_port = _int(env, "METRICS_PORT", 9103)
    for key, port in (("HANDOVER_PORT", handover_port), ("METRICS_PORT", metrics_port)):
        if port > 65535:  # the socket layer takes it modulo 65536: 70000 binds 4464
            raise ConfigError(f"{key}={port} is not a port")
    if metrics_port and metrics_port == handover_port:
        raise ConfigError(f"METRICS_PORT and HANDOVER_PORT are both {metrics_port}")
    name = device or (address or "")
    where = env.get("NODE_NAME", "").strip()
    return Config(
        device_name=device,
        device_address=address,
        user_id=env.get("USER_ID", "").strip() or name,
        source_name=f"cloud4iot-omh-consolidator/{name}" + (f"@{where}" if where else ""),
        ingest_url=env.get("INGEST_URL", "").strip() or None,
        mode="raw" if mode == "raw" else "consolidate",
        window_s=window,
        thresholds=thresholds,
        max_queue=_int(env, "QUEUE_MAX_BATCHES", 1440, minimum=1),
        max_queue_bytes=_int(env, "QUEUE_MAX_BYTES", 16 * 1024 * 1024, minimum=1),
        queue_dir=Path(queue_dir) if queue_dir else None,
        fsync="batch" if fsync == "batch" else "none" if fsync == "none" else "group",
        handover_peers=_peers(env.get("HANDOVER_PEERS", ""), handover_port or 9104),
        handover_port=handover_port,
        post_timeout_s=_float(env, "POST_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        retry_cap_s=_float(env, "RETRY_MAX_SECONDS", 60.0, minimum=1.0),
        adapter=env.get("BLE_ADAPTER", "").strip() or None,
        scan_timeout_s=_float(env, "SCAN_TIMEOUT_SECONDS", 15.0, minimum=1.0),
        metrics_port=metrics_port,
        drain_s=_float(env, "DRAIN_SECONDS", 20.0),
    )


async def device_address(
    session: aiohttp.ClientSession,
    name: str,
    *,
    api: str | None = None,
    token: str | None = None,
    ssl_context: ssl.SSLContext | bool | None = None,
) -> str:
    """``spec.address`` of the Device ``name``, read in-cluster unless told where."""
    if api is None:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ConfigError("DEVICE_ADDRESS is unset and this is not running in a cluster")
        api = f"https://{host}:{port}"
        ssl_context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
    if token is None:
        token = (SERVICE_ACCOUNT / "token").read_text(encoding="utf-8").strip()
    async with session.get(
        api.rstrip("/") + DEVICE_API + name,
        headers={"Authorization": f"Bearer {token}"},
        ssl=True if ssl_context is None else ssl_context,
    ) as resp:
        if resp.status != 200:
            raise ConfigError(f"reading Device {name}: HTTP {resp.status} {await resp.text()}")
        doc: Any = await resp.json()
    address = doc.get("spec", {}).get("address") if isinstance(doc, dict) else None
    if not isinstance(address, str):
        raise ConfigError(f"Device {name} has no spec.address")
    return normalise_address(address, f"Device {name} spec.address")
