"""Open mHealth data points: data-point 1.0 envelopes (header 1.2), heart-rate 2.0 bodies.

heart-rate 2.0 requires ``heart_rate`` (unit ``beats/min`` only) and
``effective_time_frame`` (a ``date_time`` or a ``time_interval``); a consolidated value
carries a ``descriptive_statistic`` (``average``, ``minimum``, ``maximum``, ...). Times are
RFC 3339 in UTC with millisecond precision.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SCHEMA_ID = {"namespace": "omh", "name": "heart-rate", "version": "2.0"}


def rfc3339(t: float) -> str:
    """Epoch seconds -> ``2026-11-26T10:00:00.000Z``."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who the points are about and where they were made."""

    user_id: str
    source_name: str  # e.g. "cloud4iot-omh-consolidator/patient-42-hr"


class PointFactory:
    """Builds data points; ids and the creation time are injectable for tests."""

    def __init__(
        self,
        provenance: Provenance,
        *,
        ids: Callable[[], str] = lambda: str(uuid.uuid4()),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provenance = provenance
        self._ids = ids
        self._clock = clock

    def _envelope(self, body: dict[str, Any], source_time: float) -> dict[str, Any]:
        return {
            "header": {
                "id": self._ids(),
                "creation_date_time": rfc3339(self._clock()),
                "schema_id": dict(SCHEMA_ID),
                "acquisition_provenance": {
                    "source_name": self.provenance.source_name,
                    "modality": "sensed",
                    "source_creation_date_time": rfc3339(source_time),
                },
                "user_id": self.provenance.user_id,
            },
            "body": body,
        }

    def reading(self, bpm: int, at: float) -> dict[str, Any]:
        """One measurement at one instant."""
        body = {
            "heart_rate": {"value": bpm, "unit": "beats/min"},
            "effective_time_frame": {"date_time": rfc3339(at)},
        }
        return self._envelope(body, at)

    def statistic(self, value: float, statistic: str, start: float, end: float) -> dict[str, Any]:
        """A descriptive statistic of the readings in [start, end)."""
        body = {
            "heart_rate": {"value": value, "unit": "beats/min"},
            "effective_time_frame": {
                "time_interval": {"start_date_time": rfc3339(start), "end_date_time": rfc3339(end)}
            },
            "descriptive_statistic": statistic,
        }
        return self._envelope(body, end)
