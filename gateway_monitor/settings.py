"""Everything the monitor is told at start-up, and the policy file's calibration offset."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from cloud4iot.policy.loader import load_policy
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


def policy_offset(path: Path, node: str) -> float | None:
    """``spec.gateways.<node>.rssiOffset`` of the PlacementPolicy file, if it sets one.

    Read with the extender's own loader, so the gateway accepts exactly the policies
    the extender accepts. Raises OSError or ValueError (PolicyError, with file, line
    and field) for unusable files; the caller keeps the last good value then, as the
    extender does with its policy.
    """
    radio = load_policy(path).policy.spec.gateways.get(node)
    return (
        radio.rssi_offset if radio is not None and "rssi_offset" in radio.model_fields_set else None
    )
