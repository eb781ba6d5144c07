"""From notification bytes to batches: parse, count, consolidate (or forward raw), alert.

``consolidate`` mode (the default) sends one ``summary`` batch per closed window, holding
three heart-rate 2.0 data points over the window's time interval (``average``,
``minimum``, ``maximum``; the reading count is in the batch's ``window``), and one
``alert`` batch per out-of-range alert, at once. ``raw`` mode sends one ``reading`` batch
per notification, as a function that forwards everything to the cloud would: the
baseline of the traffic benchmark. Alerts are raised in both modes.

A notification whose sensor reports "no skin contact" is counted and dropped: the strap is
not worn and its value is noise. So is a heart rate of 0 (a strap without contact
detection and no signal) or above 300 bpm (``implausible``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from omh_consolidator.consolidate import Alert, Consolidator, WindowSummary
from omh_consolidator.datapoints import PointFactory, rfc3339
from omh_consolidator.forward import Sink
from omh_consolidator.hrm import PLAUSIBLE_BPM, parse_heart_rate_measurement
from omh_consolidator.metrics import Metrics

log = logging.getLogger(__name__)

Mode = Literal["consolidate", "raw"]


class Pipeline:
    def __init__(
        self,
        sink: Sink,
        points: PointFactory,
        metrics: Metrics,
        *,
        mode: Mode = "consolidate",
        consolidator: Consolidator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sink = sink
        self.points = points
        self.metrics = metrics
        self.mode: Mode = mode
        self.consolidator = consolidator or Consolidator()
        self._clock = clock

    def on_notification(self, data: bytes, at: float | None = None) -> None:
        """One 0x2A37 value, stamped now (or at ``at``)."""
        at = self._clock() if at is None else at
        self.metrics.inc("notifications_total")
        self.metrics.inc("notification_bytes_total", len(data))
        try:
            m = parse_heart_rate_measurement(bytes(data))
        except ValueError as exc:
            self.metrics.inc("readings_total", result="malformed")
            log.warning("dropped a malformed measurement %s: %s", bytes(data).hex(), exc)
            return
        if m.contact is False:
            self.metrics.inc("readings_total", result="no_contact")
            return
        if m.bpm not in PLAUSIBLE_BPM:  # no signal (0), or noise: no alert, no summary
            self.metrics.inc("readings_total", result="implausible")
            return
        self.metrics.inc("readings_total", result="ok")
        late_before, steps_before = self.consolidator.late, self.consolidator.clock_steps
        outcome = self.consolidator.add(at, m.bpm)
        if self.consolidator.late != late_before:
            self.metrics.inc("late_readings_total")
        if self.consolidator.clock_steps != steps_before:
            self.metrics.inc("clock_steps_back_total")
            log.warning(
                "the wall clock stepped back (a reading at %s): windows and alerts start over",
                rfc3339(at),
            )
        for alert in outcome.alerts:
            self._alert(alert)
        if self.mode == "raw":
            self.sink.submit("reading", [self.points.reading(m.bpm, at)])
        else:
            for summary in outcome.closed:
                self._summary(summary)

    def tick(self, now: float | None = None) -> None:
        """Close the open window once the clock has passed its end."""
        for summary in self.consolidator.close_due(self._clock() if now is None else now):
            self._summary(summary)

    def close(self, now: float | None = None) -> None:
        """Shutting down: send the open window as it is."""
        for summary in self.consolidator.close_partial(self._clock() if now is None else now):
            self._summary(summary)

    def _alert(self, alert: Alert) -> None:
        self.metrics.inc("alerts_total", side=alert.side)
        log.warning(
            "heart rate %d bpm is %s (threshold %d)", alert.bpm, alert.side, alert.threshold_bpm
        )
        self.sink.submit(
            "alert",
            [self.points.reading(alert.bpm, alert.at)],
            alert={"side": alert.side, "threshold_bpm": alert.threshold_bpm},
        )

    def _summary(self, s: WindowSummary) -> None:
        self.metrics.inc("windows_total")
        if self.mode == "raw":
            return  # every reading already went out on its own
        stats = (("average", s.mean), ("minimum", s.minimum), ("maximum", s.maximum))
        self.sink.submit(
            "summary",
            [self.points.statistic(v, name, s.start, s.end) for name, v in stats],
            window={
                "start_date_time": rfc3339(s.start),
                "end_date_time": rfc3339(s.end),
                "count": s.count,
            },
        )
