"""The example mHealth function: BLE Heart Rate Measurement -> Open mHealth heart-rate 2.0."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "images" / "omh-consolidator" / "omh_consolidator.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("omh_consolidator", SOURCE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while executing
    spec.loader.exec_module(module)
    return module


omh = load()


def test_uint8_heart_rate_with_contact_and_rr_interval():
    m = omh.parse_heart_rate_measurement(bytes([0x16, 72, 0x00, 0x04]))
    assert m.bpm == 72
    assert m.contact is True
    assert m.energy_kj is None
    assert m.rr_intervals_s == (1.0,)


def test_uint16_heart_rate_energy_and_two_rr_intervals():
    data = bytes([0x19]) + (300).to_bytes(2, "little") + (1234).to_bytes(2, "little")
    data += (512).to_bytes(2, "little") + (1536).to_bytes(2, "little")
    m = omh.parse_heart_rate_measurement(data)
    assert m.bpm == 300
    assert m.energy_kj == 1234
    assert m.rr_intervals_s == (0.5, 1.5)
    assert m.contact is None  # contact bits 0: not supported


def test_contact_supported_but_lost():
    assert omh.parse_heart_rate_measurement(bytes([0x04, 60])).contact is False


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (bytes([0x01, 72]), "16-bit"),
        (bytes([0x08, 72, 1]), "energy"),
        (bytes([0x10, 72, 1]), "whole 16-bit"),
    ],
)
def test_malformed_measurements_are_refused_with_a_reason(data, reason):
    with pytest.raises(ValueError, match=reason):
        omh.parse_heart_rate_measurement(data)


def test_data_point_follows_heart_rate_2_0_and_the_envelope():
    at = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
    m = omh.parse_heart_rate_measurement(bytes([0x06, 72]))
    point = omh.to_data_point(
        m, user_id="patient-42", device="patient-42-hr", at=at, point_id="id-1"
    )
    header, body = point["header"], point["body"]
    assert header["schema_id"] == {"namespace": "omh", "name": "heart-rate", "version": "2.0"}
    assert {"id", "creation_date_time", "schema_id"} <= set(header)
    assert header["acquisition_provenance"]["modality"] == "sensed"
    assert header["acquisition_provenance"]["source_creation_date_time"] == "2026-11-26T10:00:00Z"
    # heart-rate 2.0: both fields required, the only unit is beats/min
    assert body == {
        "heart_rate": {"value": 72, "unit": "beats/min"},
        "effective_time_frame": {"date_time": "2026-11-26T10:00:00Z"},
    }
