"""Notifications -> batches, and every data point valid against the vendored OMH schemas."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from omh_consolidator.consolidate import Consolidator, Thresholds
from omh_consolidator.datapoints import PointFactory, Provenance, rfc3339
from omh_consolidator.forward import StdoutSink
from omh_consolidator.hrm import encode_heart_rate_measurement
from omh_consolidator.metrics import Metrics
from omh_consolidator.pipeline import Mode, Pipeline
from omh_schema import assert_valid_heart_rate_point, errors, samples

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC).timestamp()


# --- the validator itself: it accepts and refuses what Open mHealth says it should ---


@pytest.mark.parametrize(
    ("kind", "version", "schema"),
    [
        ("heart-rate", "2.0", "heart-rate-2.0.json"),
        ("data-point", "1.0", "data-point-1.0.json"),
        ("header", "1.2", "header-1.2.json"),
        ("header", "1.0", "header-1.2.json"),  # its shouldFail documents fail 1.2 too
    ],
)
def test_the_validator_agrees_with_the_published_sample_documents(
    kind: str, version: str, schema: str
) -> None:
    passing, failing = samples(kind, version, "shouldPass"), samples(kind, version, "shouldFail")
    assert passing or failing
    for path in passing:
        assert errors(schema, json.loads(path.read_text())) == [], path.name
    for path in failing:
        assert errors(schema, json.loads(path.read_text())) != [], path.name


# --- what we produce -------------------------------------------------------------------


class Run:
    def __init__(self, mode: Mode = "consolidate", thresholds: Thresholds | None = None) -> None:
        self.out = io.StringIO()
        self.metrics = Metrics()
        self.now = T0
        ids = iter(range(1_000_000))
        points = PointFactory(
            Provenance("patient-42", "cloud4iot-omh-consolidator/patient-42-hr"),
            ids=lambda: f"dp-{next(ids)}",
            clock=lambda: self.now,
        )
        self.pipeline = Pipeline(
            StdoutSink(self.metrics, source="test", out=self.out),
            points,
            self.metrics,
            mode=mode,
            consolidator=Consolidator(60, thresholds),
            clock=lambda: self.now,
        )

    def feed(self, seconds: int, bpm: int = 70, **kw: Any) -> None:
        for _ in range(seconds):
            self.pipeline.on_notification(encode_heart_rate_measurement(bpm, **kw))
            self.now += 1
            self.pipeline.tick()

    def batches(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]


def test_a_reading_point_is_valid_and_says_what_it_measured() -> None:
    points = PointFactory(Provenance("u1", "src"), ids=lambda: "id-1", clock=lambda: T0 + 2)
    point = points.reading(72, T0 + 0.25)
    assert_valid_heart_rate_point(point)
    assert point["body"] == {
        "heart_rate": {"value": 72, "unit": "beats/min"},
        "effective_time_frame": {"date_time": "2026-11-26T10:00:00.250Z"},
    }
    assert point["header"]["creation_date_time"] == "2026-11-26T10:00:02.000Z"
    assert point["header"]["acquisition_provenance"] == {
        "source_name": "src",
        "modality": "sensed",
        "source_creation_date_time": "2026-11-26T10:00:00.250Z",
    }
    assert point["header"]["user_id"] == "u1"


def test_a_statistic_point_is_valid_and_carries_its_interval() -> None:
    points = PointFactory(Provenance("u1", "src"), ids=lambda: "id-1", clock=lambda: T0)
    point = points.statistic(71.5, "average", T0, T0 + 60)
    assert_valid_heart_rate_point(point)
    assert point["body"]["descriptive_statistic"] == "average"
    assert point["body"]["effective_time_frame"] == {
        "time_interval": {
            "start_date_time": "2026-11-26T10:00:00.000Z",
            "end_date_time": "2026-11-26T10:01:00.000Z",
        }
    }
    # and the checks have teeth: a wrong unit or statistic fails
    point["body"]["heart_rate"]["unit"] = "bpm"
    point["body"]["descriptive_statistic"] = "mean"
    assert len(errors("heart-rate-2.0.json", point["body"])) == 2


def test_consolidation_sends_one_summary_per_minute_with_valid_points() -> None:
    run = Run()
    run.feed(30, 60)
    run.feed(30, 90)
    run.feed(60, 75)  # 10:01
    batches = run.batches()
    assert [b["kind"] for b in batches] == ["summary", "summary"]
    first = batches[0]
    assert first["window"] == {
        "start_date_time": "2026-11-26T10:00:00.000Z",
        "end_date_time": "2026-11-26T10:01:00.000Z",
        "count": 60,
    }
    stats = {
        p["body"]["descriptive_statistic"]: p["body"]["heart_rate"]["value"]
        for p in first["data_points"]
    }
    assert stats == {"average": 75.0, "minimum": 60, "maximum": 90}
    for batch in batches:
        for point in batch["data_points"]:
            assert_valid_heart_rate_point(point)
            assert (
                point["body"]["effective_time_frame"]["time_interval"]["start_date_time"]
                == batch["window"]["start_date_time"]
            )
    assert [b["sequence"] for b in batches] == [1, 2]
    # in: 120 notifications of 2 bytes; out: 2 batches of 3 data points
    m = run.metrics
    assert (m.get("notifications_total"), m.get("notification_bytes_total")) == (120, 240)
    assert m.get("batches_sent_total", kind="summary") == 2
    assert m.get("data_points_sent_total") == 6
    assert m.get("batch_bytes_sent_total", kind="summary") == sum(
        len(line.encode()) for line in run.out.getvalue().splitlines()
    )


def test_raw_mode_sends_every_reading_on_its_own() -> None:
    run = Run(mode="raw")
    run.feed(61, 70)
    batches = run.batches()
    assert len(batches) == 61
    assert {b["kind"] for b in batches} == {"reading"}
    assert batches[0]["data_points"][0]["body"]["effective_time_frame"] == {
        "date_time": rfc3339(T0)
    }
    for batch in batches[:3]:
        assert_valid_heart_rate_point(batch["data_points"][0])
    assert run.metrics.get("windows_total") == 1  # counted, never sent in raw mode


@pytest.mark.parametrize("mode", ["consolidate", "raw"])
def test_an_out_of_range_reading_goes_out_at_once_as_an_alert(mode: Mode) -> None:
    run = Run(mode=mode, thresholds=Thresholds(low_bpm=40, high_bpm=150, repeat_s=60))
    run.feed(10, 80)
    run.feed(5, 170)  # sustained: one alert, not five
    alerts = [b for b in run.batches() if b["kind"] == "alert"]
    assert len(alerts) == 1
    assert alerts[0]["alert"] == {"side": "high", "threshold_bpm": 150}
    (point,) = alerts[0]["data_points"]
    assert_valid_heart_rate_point(point)
    assert point["body"]["heart_rate"]["value"] == 170
    assert point["body"]["effective_time_frame"] == {"date_time": rfc3339(T0 + 10)}
    assert run.metrics.get("alerts_total", side="high") == 1
    # the window is still open: in consolidate mode the alert did not wait for it
    assert all(b["kind"] != "summary" for b in run.batches())


def test_no_contact_and_malformed_notifications_are_counted_not_consolidated() -> None:
    run = Run()
    run.feed(3, 70, contact=True)
    run.feed(3, 250, contact=False)  # strap not worn: noise
    run.pipeline.on_notification(b"\x01")  # malformed
    run.pipeline.close()
    (summary,) = run.batches()
    assert summary["window"]["count"] == 3
    assert {
        p["body"]["descriptive_statistic"]: p["body"]["heart_rate"]["value"]
        for p in summary["data_points"]
    }["maximum"] == 70
    m = run.metrics
    assert m.get("readings_total", result="ok") == 3
    assert m.get("readings_total", result="no_contact") == 3
    assert m.get("readings_total", result="malformed") == 1
    assert m.get("notifications_total") == 7
    assert m.get("alerts_total", side="high") == 0


def test_summaries_and_alerts_go_on_after_the_wall_clock_steps_back_a_day() -> None:
    run = Run(thresholds=Thresholds(repeat_s=60))
    run.now += 86_400  # the gateway's clock ran a day ahead
    run.feed(30, 70)
    run.feed(1, 190)
    run.now -= 86_400  # NTP steps it back
    run.feed(3600, 70)  # an hour of readings
    run.feed(600, 190)  # then ten minutes high
    summaries = [b for b in run.batches() if b["kind"] == "summary"]
    alerts = [b for b in run.batches() if b["kind"] == "alert"]
    assert len(summaries) >= 70  # the day-ahead minute, then one a minute (was: none)
    assert summaries[0]["window"]["count"] == 31  # the minute before the step, as it was
    assert len(alerts) == 1 + 10  # one before the step, then one a minute
    assert run.metrics.get("late_readings_total") == 0
    assert run.metrics.get("clock_steps_back_total") == 1


@pytest.mark.parametrize("mode", ["consolidate", "raw"])
def test_zero_and_impossible_heart_rates_are_counted_not_alerted_nor_summarised(
    mode: Mode,
) -> None:
    run = Run(mode)
    run.feed(2, 72)
    run.feed(3, 0)  # a strap without contact detection and no signal: 0, "cardiac arrest"
    run.feed(1, 301)
    run.feed(1, 300)  # the highest plausible: an alert, and in the summary
    run.pipeline.close()
    kinds = [b["kind"] for b in run.batches()]
    alerts = [b for b in run.batches() if b["kind"] == "alert"]
    assert [a["data_points"][0]["body"]["heart_rate"]["value"] for a in alerts] == [300]
    if mode == "consolidate":
        assert kinds == ["alert", "summary"]
        (summary,) = [b for b in run.batches() if b["kind"] == "summary"]
        assert summary["window"]["count"] == 3
        stats = {
            p["body"]["descriptive_statistic"]: p["body"]["heart_rate"]["value"]
            for p in summary["data_points"]
        }
        assert (stats["minimum"], stats["maximum"]) == (72, 300)
    else:
        assert kinds.count("reading") == 3
    assert run.metrics.get("readings_total", result="implausible") == 4
    assert run.metrics.get("readings_total", result="ok") == 3
    assert run.metrics.get("alerts_total", side="low") == 0


def test_shutdown_sends_the_open_window_ending_now() -> None:
    run = Run()
    run.feed(20, 66)
    run.pipeline.close()
    (summary,) = run.batches()
    assert summary["window"]["end_date_time"] == rfc3339(T0 + 20)
    assert summary["window"]["count"] == 20


def test_metrics_exposition_lists_every_counter_with_labels() -> None:
    run = Run()
    run.feed(61, 70)
    text = run.metrics.exposition()
    assert "omh_consolidator_notifications_total 61\n" in text
    assert "omh_consolidator_notification_bytes_total 122\n" in text
    assert 'omh_consolidator_batches_sent_total{kind="summary"} 1\n' in text
    assert "# TYPE omh_consolidator_queue_batches gauge" in text
    with pytest.raises(KeyError):
        run.metrics.inc("no_such_counter")
