"""Open mHealth consolidator: a patient's BLE heart-rate strap -> OMH data points.

The example IoT function the demo places (class `mhealth-consolidator`). It
subscribes to the strap's Heart Rate Measurement characteristic (0x2A37) with
bleak and writes one Open mHealth `heart-rate` 2.0 data point per notification
as a JSON line on stdout, where the site's pipeline (or a log collector) takes
it. Raw health data: the placement policy keeps this pod on the gateway that
hears the strap, or on the edge, never in the cloud.

Environment: DEVICE_ADDRESS (BLE address), DEVICE_NAME (the Device object),
USER_ID (pseudonymous patient id).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

HEART_RATE_MEASUREMENT = "00002a37-0000-1000-8000-00805f9b34fb"


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    bpm: int
    contact: bool | None  # None: the sensor does not report skin contact
    energy_kj: int | None
    rr_intervals_s: tuple[float, ...]


def parse_heart_rate_measurement(data: bytes) -> HeartRateMeasurement:
    """Decode a 0x2A37 value (little-endian; flags, HR, [energy], [RR...])."""
    if len(data) < 2:
        raise ValueError(f"heart rate measurement too short: {len(data)} bytes")
    flags, pos = data[0], 1
    if flags & 0x01:  # uint16 heart rate
        if len(data) < 3:
            raise ValueError("flags announce a 16-bit heart rate, payload is shorter")
        bpm, pos = int.from_bytes(data[1:3], "little"), 3
    else:
        bpm, pos = data[1], 2
    contact_bits = (flags >> 1) & 0x03
    contact = None if contact_bits < 2 else contact_bits == 3
    energy = None
    if flags & 0x08:
        if len(data) < pos + 2:
            raise ValueError("flags announce energy expended, payload is shorter")
        energy, pos = int.from_bytes(data[pos : pos + 2], "little"), pos + 2
    rr: tuple[float, ...] = ()
    if flags & 0x10:
        raw = data[pos:]
        if len(raw) % 2:
            raise ValueError("RR-intervals must be whole 16-bit values")
        rr = tuple(int.from_bytes(raw[i : i + 2], "little") / 1024 for i in range(0, len(raw), 2))
    return HeartRateMeasurement(bpm=bpm, contact=contact, energy_kj=energy, rr_intervals_s=rr)


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_data_point(
    m: HeartRateMeasurement, *, user_id: str, device: str, at: datetime, point_id: str
) -> dict[str, Any]:
    """An Open mHealth data-point 1.0 envelope (header 1.2) with a heart-rate 2.0 body."""
    return {
        "header": {
            "id": point_id,
            "creation_date_time": rfc3339(datetime.now(UTC)),
            "schema_id": {"namespace": "omh", "name": "heart-rate", "version": "2.0"},
            "acquisition_provenance": {
                "source_name": f"cloud4iot-omh-consolidator/{device}",
                "modality": "sensed",
                "source_creation_date_time": rfc3339(at),
            },
            "user_id": user_id,
        },
        "body": {
            "heart_rate": {"value": m.bpm, "unit": "beats/min"},
            "effective_time_frame": {"date_time": rfc3339(at)},
        },
    }


async def run(address: str, device: str, user_id: str) -> None:  # pragma: no cover - radio
    from bleak import BleakClient

    def on_measurement(_: Any, data: bytearray) -> None:
        try:
            m = parse_heart_rate_measurement(bytes(data))
        except ValueError as exc:
            print(f"dropped a malformed measurement: {exc}", file=sys.stderr)
            return
        if m.contact is False:
            return  # strap not worn: the value is noise
        point = to_data_point(
            m, user_id=user_id, device=device, at=datetime.now(UTC), point_id=str(uuid.uuid4())
        )
        print(json.dumps(point), flush=True)

    while True:
        try:
            gone = asyncio.Event()
            lost = lambda _, g=gone: g.set()  # noqa: E731
            async with BleakClient(address, disconnected_callback=lost) as client:
                await client.start_notify(HEART_RATE_MEASUREMENT, on_measurement)
                await gone.wait()
        except Exception as exc:  # out of range, adapter busy: retry
            print(f"connection to {address} failed: {exc}; retrying", file=sys.stderr)
        await asyncio.sleep(5)


def main() -> None:  # pragma: no cover - radio
    asyncio.run(run(os.environ["DEVICE_ADDRESS"], os.environ["DEVICE_NAME"], os.environ["USER_ID"]))


if __name__ == "__main__":  # pragma: no cover
    main()
