"""Counters of what comes in from the strap and goes out to the cloud.

A few plain counters (no client library in the image), served in the Prometheus text
format on ``/metrics``. Every name is declared here with its help text; ``inc`` of an
undeclared name is a bug and raises.
"""

from __future__ import annotations

PREFIX = "omh_consolidator_"

HELP: dict[str, str] = {
    "notifications_total": "Heart Rate Measurement notifications received from the strap",
    "notification_bytes_total": "Bytes of Heart Rate Measurement values received",
    "readings_total": "Notifications parsed into a reading, by result"
    " (ok, malformed, no_contact, implausible)",
    "late_readings_total": "Readings stamped before the open window, left out of summaries",
    "clock_steps_back_total": "Wall clock steps back seen in readings (windows, alerts restarted)",
    "alerts_total": "Out-of-range alerts raised, by side (low, high)",
    "windows_total": "Consolidation windows closed",
    "batches_queued_total": "Batches handed to the cloud forwarder, by kind",
    "batches_sent_total": "Batches the cloud acknowledged (2xx), by kind",
    "batch_bytes_sent_total": "Body bytes of acknowledged batches, by kind",
    "data_points_sent_total": "Open mHealth data points in acknowledged batches",
    "post_attempts_total": "HTTP POSTs to the ingest endpoint, retries included",
    "post_failures_total": "POSTs that failed and will be retried, by reason",
    "batches_rejected_total": "Batches the cloud refused with a 4xx (never retried), by kind",
    "batches_dropped_total": "Batches dropped because the queue was full, by kind",
    "batch_bytes_dropped_total": "Body bytes of batches dropped because the queue was full",
    "queue_fsyncs_total": "fsync calls on the queue log",
    "queue_compactions_total": "Rewrites of the queue log with only what still waits",
    "queue_adopted_batches_total": "Waiting batches adopted at start from dead owners' logs",
    "queue_corrupt_logs_total": "Adopted logs with a corrupt record (copied aside, prefix kept)",
    "queue_unreadable_logs_total": "Other owners' queue directories or logs that could not be"
    " locked or read at start (left; another uid's, an I/O error)",
    "queue_unremovable_logs_total": "Adopted queue directories that could not be removed (left)",
    "queue_write_failures_total": "Failed writes of the queue log (disk full, I/O error)",
    "handover_batches_sent_total": "Batches handed to a peer at shutdown, which stored them",
    "handover_batches_received_total": "Batches taken over from a leaving peer (new ones only)",
    "handover_failures_total": "Handover attempts to a peer that failed, by reason",
    "ble_connects_total": "Subscriptions established (connected and notifying)",
    "ble_disconnects_total": "Established subscriptions that ended because the link dropped",
    "ble_attempt_failures_total": "Connection attempts that failed, by reason",
    "ble_silent_sessions_total": "Subscriptions ended because the strap sent nothing for the"
    " silence timeout while the link looked up (then reconnected)",
}

GAUGES: dict[str, str] = {
    "queue_batches": "Batches waiting for the cloud, the one in flight included",
    "queue_bytes": "Body bytes waiting for the cloud, the one in flight included",
    "queue_log_bytes": "Bytes of the queue log on disk (0 without QUEUE_DIR)",
    "queue_log_behind": "1 while a write failed and the log misses batches that wait",
    "ble_subscribed": "1 while subscribed to the strap's notifications",
}

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[tuple[str, Labels], float] = {}
        self._gauges: dict[str, float] = dict.fromkeys(GAUGES, 0.0)

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        if name not in HELP:
            raise KeyError(f"undeclared counter {name}")
        key = (name, tuple(sorted(labels.items())))
        self._counters[key] = self._counters.get(key, 0) + value

    def set(self, name: str, value: float) -> None:
        if name not in GAUGES:
            raise KeyError(f"undeclared gauge {name}")
        self._gauges[name] = value

    def get(self, name: str, **labels: str) -> float:
        """One series' value (0 if never incremented); a gauge if ``name`` is one."""
        if name in GAUGES:
            return self._gauges[name]
        return self._counters.get((name, tuple(sorted(labels.items()))), 0)

    def total(self, name: str) -> float:
        """A counter summed over all its labels."""
        return sum(v for (n, _), v in self._counters.items() if n == name)

    def exposition(self) -> str:
        lines: list[str] = []
        for name, help_text in HELP.items():
            lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} counter"]
            series = sorted((lb, v) for (n, lb), v in self._counters.items() if n == name)
            for labels, value in series:
                rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                selector = f"{{{rendered}}}" if labels else ""
                lines.append(f"{PREFIX}{name}{selector} {_number(value)}")
        for name, help_text in GAUGES.items():
            lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} gauge"]
            lines.append(f"{PREFIX}{name} {_number(self._gauges[name])}")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
