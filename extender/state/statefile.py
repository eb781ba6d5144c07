"""A fixed world from a state file: the source for `cloud4iot simulate`, what-if
replicas (`cloud4iot-extender --state`) and benchmarks.

State file (YAML or JSON), all keys optional:

    now: 2026-11-26T10:00:00Z      # evaluation time (RFC3339 or epoch s); default: now
    nodes:                         # Kubernetes Node objects (labels are what matter)
      - metadata: {name: gw1, labels: {cloud4iot.io/tier: gateway, kubernetes.io/arch: arm64}}
    devices:                       # Device objects (devices.cloud4iot.io) with status
      - metadata: {name: patient-42}
        spec: {address: "AA:BB:CC:DD:EE:01"}
        status:
          sightings: [{node: gw1, rssi: -60, lastSeen: 2026-11-26T09:59:58Z}]
          nearest: {node: gw1}       # optional: the central decision
    load:                          # utilisation 0..1 per node
      gw1: {cpu: 0.95, memory: 0.40, age: 5s}   # `age` before `now`, or `at` (time)
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml

from cloud4iot.devices import parse_time
from cloud4iot.policy.schema import parse_duration
from extender.state.devices import device_facts
from extender.state.snapshot import LoadSample, NodeFacts, Snapshot


def read_yaml(path: Path) -> Any:
    """YAML, or JSON (a subset of YAML) read by orjson: a 5,000-node, 10,000-Device
    world as JSON peaks at ~80 MB this way and at ~430 MB through the YAML parser,
    which the process never returns to the system."""
    try:
        text = path.read_bytes()
        if text.lstrip()[:1] in (b"{", b"["):
            with contextlib.suppress(orjson.JSONDecodeError):  # YAML with flow style
                return orjson.loads(text)
        return yaml.safe_load(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise StateFileError(f"{path}: not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise StateFileError(f"{path}: invalid YAML: {exc}") from exc


class StateFileError(ValueError):
    """The state or pod file is not usable; the message names the file and the entry."""


def _fraction(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise StateFileError(f"{where}: expected a number between 0 and 1, got {value!r}")
    return float(value)


def _list(data: Mapping[str, Any], key: str, source: str) -> list[Any]:
    """A list of objects (absent or null: none); anything else names the key (a number
    was a TypeError traceback, a mapping iterated its keys)."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise StateFileError(f"{source}: {key}: expected a list of objects, got {value!r}")
    return value


def snapshot_from_state(data: Any, source: str = "<state>") -> tuple[Snapshot, float]:
    """Build a Snapshot and the evaluation time from a parsed state document."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise StateFileError(f"{source}: the state must be a mapping")
    now = time.time() if data.get("now") is None else parse_time(data.get("now"))
    # NaN too: every comparison with it is false, so two-year-old sightings were fresh.
    if now is None or not math.isfinite(now):
        raise StateFileError(f"{source}: now: not a time: {data.get('now')!r}")

    nodes: dict[str, NodeFacts] = {}
    for i, obj in enumerate(_list(data, "nodes", source)):
        try:
            facts = NodeFacts.from_node(obj if isinstance(obj, Mapping) else {})
        except ValueError as exc:
            raise StateFileError(f"{source}: nodes[{i}]: {exc}") from exc
        nodes[facts.name] = facts

    devices = {}
    for i, obj in enumerate(_list(data, "devices", source)):
        try:
            dev = device_facts(obj if isinstance(obj, Mapping) else {})
        except ValueError as exc:
            raise StateFileError(f"{source}: devices[{i}]: {exc}") from exc
        devices[dev.name] = dev

    load: dict[str, LoadSample] = {}
    raw_load = data.get("load") or {}
    if not isinstance(raw_load, Mapping):
        raise StateFileError(f"{source}: load must map node names to {{cpu, memory}}")
    for node, entry in raw_load.items():
        where = f"{source}: load.{node}"
        if not isinstance(entry, Mapping):
            raise StateFileError(f"{where}: expected {{cpu, memory, age}}")
        try:
            at = (
                parse_time(entry["at"])
                if "at" in entry
                else now - parse_duration(entry.get("age", 0))
            )
        except ValueError as exc:
            raise StateFileError(f"{where}.age: {exc}") from exc
        if at is None or not math.isfinite(at):
            key = "at" if "at" in entry else "age"
            raise StateFileError(f"{where}.{key}: not a time: {entry.get(key)!r}")
        load[str(node)] = LoadSample(
            cpu=_fraction(entry.get("cpu"), f"{where}.cpu"),
            memory=_fraction(entry.get("memory"), f"{where}.memory"),
            at=at,
        )
    snapshot = Snapshot(
        nodes=nodes,
        devices=devices,
        load=load,
        nodes_synced=True,
        devices_synced=True,
        load_refreshed_at=now,
    )
    return snapshot, now


def load_state(path: Path) -> tuple[Snapshot, float]:
    return snapshot_from_state(read_yaml(path), str(path))
