"""Everything the monitor is told at start-up, and the policy file's calibration offset."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway_monitor.lease import LeaseConfig
from gateway_monitor.publisher import PublishConfig
from gateway_monitor.scanner import DutyCycle, ScanMode
from gateway_monitor.tracker import ConfigError, TrackerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settings:
    node: str
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    lease: LeaseConfig = field(default_factory=LeaseConfig)
    lease_namespace: str | None = None  # None: the pod's own namespace
    replay: Path | None = None
    speed: float = 1.0
    adapter: str = "hci0"
    scan_mode: ScanMode = ScanMode.AUTO
    duty: DutyCycle = field(default_factory=DutyCycle)
    kubeconfig: Path | None = None  # None: in-cluster service account
    dry_run: bool = False  # no apiserver: log what would be applied
    static_devices: dict[str, str] = field(default_factory=dict)  # dry run: name -> address
    rssi_offset: float | None = None  # explicit calibration; wins over the policy's
    policy: Path | None = None  # PlacementPolicy with spec.gateways.<node>.rssiOffset
    policy_poll: float = 10.0
    host: str = "0.0.0.0"
    port: int = 9102
    tick_interval: float = 0.25
    record: Path | None = None  # --record: adverts of our Devices as a replayable trace
    record_max_bytes: int = 50_000_000

    def __post_init__(self) -> None:
        if not self.node:
            raise ConfigError("the node name is required (--node or NODE_NAME)")
        if not self.duty.always_on and self.tracker.away_timeout <= self.duty.off:
            raise ConfigError(
                f"away timeout ({self.tracker.away_timeout}s) must exceed the scan pause "
                f"({self.duty.off}s), or every pause would mark every device away"
            )
        if self.record is not None and self.record_max_bytes < 1024:
            raise ConfigError("--record-max-bytes must be at least 1024")
        if self.dry_run and not self.static_devices:
            raise ConfigError("--dry-run needs --device NAME=ADDRESS (there is no apiserver)")
        # A policy named but absent (a ConfigMap not created, a wrong mount) would leave the
        # radio uncalibrated without a word: refuse to start, so the pod says why.
        if self.policy is not None and not self.policy.is_file():
            raise ConfigError(f"policy file {self.policy} not found (--policy)")

    def effective_tracker(self) -> TrackerConfig:
        """The tracker settings with the smoothing window counted in listening time.

        With the radio on a fraction f of the time, a window of W seconds holds only f*W
        seconds of adverts; stretching it to W/f keeps the same number of readings, or
        a 1-in-10 duty cycle would never gather ``arrive_samples`` readings at all.
        """
        return scaled_for_duty(self.tracker, self.duty)


def scaled_for_duty(config: TrackerConfig, duty: DutyCycle) -> TrackerConfig:
    if duty.always_on:
        return config
    return replace(
        config,
        window=config.window / duty.fraction,
        rssi_window=config.rssi_window / duty.fraction,
    )


OFFSET_LIMIT = 40.0  # dB either way: the PlacementPolicy schema's bound (GatewayRadio)
_RADIO_FIELDS = frozenset({"rssiOffset", "excludeFromVote"})


def policy_offset(path: Path, node: str) -> float | None:
    """``spec.gateways.<node>.rssiOffset`` of the PlacementPolicy file, if it sets one.

    Reads that one field with PyYAML, not the extender's pydantic models (their 11 MB
    would be a quarter of a Pi-class gateway's budget, issue 23): the path to it must
    be mappings, this node's entry may hold only the schema's fields, and the offset a
    number within +-40 dB, as the schema says. The rest of the policy is the
    extender's to judge. Raises OSError or ValueError (file, line where known, field)
    for unusable files; the caller keeps the last good value then.
    """
    import yaml

    text = path.read_text()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ValueError(f"{path}:{where} not YAML: {problem}") from None
    twice = _duplicate_key(yaml.compose(text))
    if twice is not None:
        # The extender refuses such a file ("key appears twice"): applying the last
        # of the duplicates here would calibrate by a policy nobody accepted.
        key, line = twice
        raise ValueError(f"{path}: line {line}: key {key!r} appears twice")
    entry: object = doc
    field_path = "the document"
    for key in ("spec", "gateways", node):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: {field_path} must be a mapping, not {_kind(entry)}")
        if entry.get(key) is None:
            return None
        entry = entry[key]
        field_path = key if key == "spec" else f"{field_path}.{key}"
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: {field_path} must be a mapping, not {_kind(entry)}")
    unknown = sorted(str(k) for k in entry if k not in _RADIO_FIELDS)
    if unknown:
        raise ValueError(
            f"{path}: {field_path}: unknown field {', '.join(unknown)}"
            f" (known: {', '.join(sorted(_RADIO_FIELDS))})"
        )
    if "rssiOffset" not in entry:
        return None
    value = entry["rssiOffset"]
    where = f"{path}: {field_path}.rssiOffset"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number of dB, not {_kind(value)} {value!r}")
    if not -OFFSET_LIMIT <= value <= OFFSET_LIMIT:  # NaN fails this too
        raise ValueError(f"{where} = {value} is outside -40..40 dB")
    return float(value)


def _duplicate_key(node: Any) -> tuple[str, int] | None:
    """The first mapping key written twice in a composed YAML document, and its line."""
    import yaml

    todo = [node]
    while todo:
        current = todo.pop()
        if isinstance(current, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in seen:
                        return key.value, key.start_mark.line + 1
                    seen.add(key.value)
                todo.append(value)
        elif isinstance(current, yaml.SequenceNode):
            todo.extend(current.value)
    return None


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__
