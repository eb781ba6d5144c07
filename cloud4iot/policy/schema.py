"""PlacementPolicy: the YAML admins tune, as typed, validated models.

Field names are camelCase in YAML (Kubernetes style) and snake_case in Python.
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

API_VERSION = "cloud4iot.io/v1alpha1"
KIND = "PlacementPolicy"

_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<u>ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> Any:
    """'1m30s', '500ms', '10s' or a number of seconds -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s, 2m or 500ms")
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an int of 400 digits: a ValueError names the field
            raise ValueError(f"at most {MAX_DURATION:.0f} seconds (a week)") from None
    if isinstance(value, str):
        text = value.strip()
        pos, total = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            total += float(match["n"]) * _UNIT[match["u"]]
            pos = match.end()
        if text and pos == len(text):
            return total
    raise ValueError(f"{value!r} is not a duration such as 30s, 2m or 500ms")


# No duration of the policy is meant to be longer; and `.inf` or a value past the
# float range would reach int() in the consumers (found in review, 2026-12-07).
MAX_DURATION = 7 * 24 * 3600.0
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=MAX_DURATION)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Dbm = Annotated[float, Field(ge=-127, le=20)]
# Strict: YAML's `yes` or `2.5` must not quietly become a count.
Count = Annotated[int, Field(strict=True, ge=1)]


class Tier(StrEnum):
    GATEWAY = "gateway"
    EDGE = "edge"
    CLOUD = "cloud"


class ProximityMode(StrEnum):
    REQUIRED = "required"  # gateways that do not hear the device are refused
    PREFERRED = "preferred"  # they lose their tier preference, but stay feasible
    IGNORED = "ignored"


class WhenDeviceAway(StrEnum):
    """What the rebalancer does with a function when no gateway hears its device."""

    KEEP = "keep"  # leave it where it is
    FALLBACK = "fallback"  # move it to the best node the scorer still allows (edge, ...)
    PARK = "park"  # scale its Deployment to zero; restore it when a gateway hears the device


class StaleRule(StrEnum):
    FAIL_OPEN = "failOpen"  # stale or missing data: no hard limit, neutral score
    FAIL_CLOSED = "failClosed"  # stale or missing data: node refused (transient)


class _Model(BaseModel):
    # allow_inf_nan: YAML's `.inf` and `.nan` are floats; no number of the policy may be
    # one (an infinite weight made every score NaN: a 500 for every pod of its class).
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
    )


class StaleData(_Model):
    load_max_age: Duration = 30.0
    sighting_max_age: Duration = 30.0
    on_stale_load: StaleRule = StaleRule.FAIL_OPEN


class PrometheusQueries(_Model):
    cpu: str = '1 - avg by (node) (rate(node_cpu_seconds_total{mode="idle"}[30s]))'
    memory: str = "max by (node) (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)"


class PrometheusSpec(_Model):
    refresh_interval: Annotated[Duration, Field(gt=0)] = 5.0
    timeout: Annotated[Duration, Field(gt=0)] = 2.0
    node_label: Annotated[str, Field(min_length=1)] = "node"
    queries: PrometheusQueries = PrometheusQueries()


class NearestRule(StrEnum):
    # Move once the strongest rival's advantage over the incumbent, less deadbandDb,
    # summed over time (dB x s, never below zero) reaches switchCostDbS.
    EVIDENCE = "evidence"
    # Move when one rival is challengerMarginDb stronger for challengerDwell.
    DWELL = "dwell"


class NearestSpec(_Model):
    """Incumbent/challenger hysteresis for the central nearest-gateway decision."""

    rule: NearestRule = NearestRule.EVIDENCE
    switch_cost_db_s: Annotated[float, Field(gt=0)] = 6.0
    deadband_db: Annotated[float, Field(ge=0)] = 5.5
    # Above zero: with no margin, equal signals would hand over every dwell period.
    challenger_margin_db: Annotated[float, Field(gt=0)] = 6.0
    challenger_dwell: Duration = 10.0
    freshness: Duration = 15.0
    # A decision taken for a newly heard device is corrected at once, within this
    # window, by a gateway reporting a moment later that is margin-stronger; the
    # rebalancer never moves a function on a decision younger than this.
    settle: Duration = 5.0
    # A newly heard device is decided this long after its first fresh sighting, on
    # every gateway heard by then, not on whichever gateway's apply landed first.
    arrival_wait: Duration = 0.0  # the shipped policy sets 1s (policies/README.md)


class RebalanceSpec(_Model):
    """Limits of the rebalancer, which moves running functions (see policies/README.md)."""

    interval: Annotated[Duration, Field(gt=0)] = 60.0  # the periodic full pass
    # Score points (0..10) a node must beat a still-feasible current node by.
    min_improvement: Annotated[int, Field(strict=True, ge=1, le=10)] = 2
    dwell: Duration = 10.0  # the same move must be wanted continuously this long
    cooldown: Duration = 120.0  # per workload and per device; no return to the node left
    device_away_after: Duration = 120.0  # `whenDeviceAway: park` waits this long
    max_moves_per_minute: Count = 10
    max_moves_per_node_per_minute: Count = 3


class GatewayRadio(_Model):
    rssi_offset: Annotated[float, Field(ge=-40, le=40)] = 0.0
    exclude_from_vote: bool = False


class LoadLimits(_Model):
    cpu: Fraction | None = None
    memory: Fraction | None = None


# Bounded: weights only count relative to each other, and 1e308 each overflows their sum.
Weight = Annotated[float, Field(ge=0, le=1000)]


class Weights(_Model):
    tier: Weight = 1.0
    proximity: Weight = 1.0
    load: Weight = 1.0


class FunctionClass(_Model):
    description: str = ""
    tiers: Annotated[list[Tier], Field(min_length=1)]
    preference: dict[str, Annotated[list[Tier], Field(min_length=1)]] = Field(default_factory=dict)
    default_mode: str = "default"
    proximity: ProximityMode = ProximityMode.IGNORED
    rssi_threshold: Dbm = -85.0
    rssi_strong: Dbm = -50.0
    load_limits: LoadLimits = LoadLimits()
    weights: Weights = Weights()
    when_device_away: WhenDeviceAway = WhenDeviceAway.FALLBACK

    def preference_for(self, mode: str | None) -> list[Tier]:
        """The ordered tier preference for a mode; the class default, then its tiers."""
        if mode is not None and mode in self.preference:
            return self.preference[mode]
        return self.preference.get(self.default_mode, self.tiers)


class Metadata(_Model):
    name: Annotated[str, Field(min_length=1)]


class PolicySpec(_Model):
    stale_data: StaleData = StaleData()
    prometheus: PrometheusSpec = PrometheusSpec()
    nearest: NearestSpec = NearestSpec()
    rebalance: RebalanceSpec = RebalanceSpec()
    gateways: dict[str, GatewayRadio] = Field(default_factory=dict)
    classes: Annotated[dict[str, FunctionClass], Field(min_length=1)]


class PlacementPolicy(_Model):
    api_version: Literal["cloud4iot.io/v1alpha1"]
    kind: Literal["PlacementPolicy"]
    metadata: Metadata
    spec: PolicySpec


def semantic_problems(policy: PlacementPolicy) -> list[tuple[tuple[str | int, ...], str]]:
    """Rules that span fields; each problem carries the YAML path it belongs to."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for name, cls in policy.spec.classes.items():
        base: tuple[str | int, ...] = ("spec", "classes", name)
        allowed = set(cls.tiers)
        if len(allowed) != len(cls.tiers):
            problems.append(((*base, "tiers"), "lists a tier twice"))
        for mode, order in cls.preference.items():
            for i, tier in enumerate(order):
                if tier not in allowed:
                    problems.append(
                        (
                            (*base, "preference", mode, i),
                            f"tier {tier.value!r} is not in this class's tiers "
                            f"{[t.value for t in cls.tiers]}",
                        )
                    )
            if len(set(order)) != len(order):
                problems.append(((*base, "preference", mode), "lists a tier twice"))
        if cls.preference and cls.default_mode not in cls.preference:
            problems.append(
                (
                    (*base, "defaultMode"),
                    f"mode {cls.default_mode!r} has no entry in preference "
                    f"(has {sorted(cls.preference)})",
                )
            )
        if cls.rssi_strong <= cls.rssi_threshold:
            problems.append(
                ((*base, "rssiStrong"), "must be above rssiThreshold (stronger signal)")
            )
        w = cls.weights
        if w.tier + w.proximity + w.load <= 0:
            problems.append(((*base, "weights"), "at least one weight must be positive"))
        if cls.proximity is not ProximityMode.IGNORED and Tier.GATEWAY not in allowed:
            problems.append(
                ((*base, "proximity"), "a proximity rule needs 'gateway' among the tiers")
            )
        if (
            cls.when_device_away is not WhenDeviceAway.FALLBACK
            and cls.proximity is ProximityMode.IGNORED
        ):
            problems.append(
                (
                    (*base, "whenDeviceAway"),
                    f"{cls.when_device_away.value!r} needs a device: set proximity "
                    "to 'required' or 'preferred'",
                )
            )
    return problems
