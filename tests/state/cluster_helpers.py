"""Helpers for live-state tests on the devcluster: sightings in the gateways'
GatewayReports, and restarting the real kube-apiserver."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from devcluster.processes import start_detached

GROUP, VERSION, PLURAL = "cloud4iot.io", "v1alpha1", "devices"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def create_device(api: client.ApiClient, name: str, address: str) -> None:
    client.CustomObjectsApi(api).create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Device",
            "metadata": {"name": name},
            "spec": {"address": address},
        },
    )


def sight(api: client.ApiClient, device: str, gateway: str, rssi: float | None) -> None:
    """One gateway's sighting of one device (None removes it), in its GatewayReport."""
    report_sight(api, device, gateway, rssi)


def report_sight(api: client.ApiClient, device: str, gateway: str, rssi: float | None) -> None:
    """Put one device's entry into `gateway`'s GatewayReport (None takes it out).

    The list is atomic (a monitor always writes it whole), so the admin reads the report,
    changes that one entry and writes the whole list back, retrying on a conflict: calls
    for several devices add up. The report must exist: the elected extender makes it.
    """
    custom = client.CustomObjectsApi(api)
    try:
        custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "gatewayreports",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "GatewayReport",
                "metadata": {"name": gateway},
            },
        )
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    for _ in range(20):
        obj: dict[str, Any] = custom.get_cluster_custom_object_status(
            GROUP, VERSION, "gatewayreports", gateway
        )
        status: dict[str, Any] = dict(obj.get("status") or {})
        entries = [e for e in status.get("sightings") or [] if e.get("device") != device]
        if rssi is not None:
            entries.append({"device": device, "rssi": round(rssi), "lastSeen": now_rfc3339()})
        status["sightings"] = entries
        status["heard"] = len(entries)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GatewayReport",
            "metadata": {"name": gateway, "resourceVersion": obj["metadata"]["resourceVersion"]},
            "status": status,
        }
        try:
            custom.replace_cluster_custom_object_status(
                GROUP, VERSION, "gatewayreports", gateway, body
            )
            return
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    raise RuntimeError(f"GatewayReport {gateway}: 20 conflicting writes in a row")


def device_status(api: client.ApiClient, device: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_cluster_custom_object(
        GROUP, VERSION, PLURAL, device
    )
    return obj.get("status") or {}


def restart_apiserver(kwok_cluster_dir: Path, env: dict[str, str], down_for: float = 0.0) -> float:
    """Kill the real kube-apiserver and start it again with the same command line,
    `down_for` seconds after it died (an outage; 0: at once).

    Returns how long it was down. The new pid goes into kwokctl's pid file so
    `kwokctl delete cluster` still stops it.
    """
    pid_file = kwok_cluster_dir / "pids" / "kube-apiserver.pid"
    pid = int(pid_file.read_text().strip())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    cwd = os.readlink(f"/proc/{pid}/cwd")
    started = time.monotonic()
    # SIGKILL, like a crash: the port is free at once (a graceful stop drains for
    # many seconds, and another local cluster could take the port meanwhile).
    os.kill(pid, signal.SIGKILL)
    while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
        time.sleep(0.1)
    time.sleep(max(0.0, started + down_for - time.monotonic()))
    new_pid = start_detached(
        [a.decode() for a in argv],
        kwok_cluster_dir / "logs" / "kube-apiserver.restarted.log",
        env,
        cwd=Path(cwd),
    )
    pid_file.write_text(str(new_pid))
    return time.monotonic() - started


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (OSError, IndexError):
        return "Z"
