"""The BLE Heart Rate Measurement characteristic (0x2A37): decoder and encoder.

Layout (little-endian): flags (uint8), heart rate (uint8, or uint16 when flags bit 0 is
set), energy expended (uint16 kJ, cumulative, when bit 3 is set), then RR intervals
(uint16 each, in 1/1024 s, oldest first) filling the rest when bit 4 is set. Bits 1-2 are
the sensor contact status: 0 or 1 = not supported, 2 = supported but no contact,
3 = supported and in contact. Bits 5-7 are reserved and ignored, as are trailing bytes
that no flag announces (the heart rate is still good).

The encoder exists for simulators: the tests' fake strap and the traffic benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

HEART_RATE_SERVICE = "0000180d-0000-1000-8000-00805f9b34fb"
HEART_RATE_MEASUREMENT = "00002a37-0000-1000-8000-00805f9b34fb"

FLAG_HR_UINT16 = 0x01
FLAG_CONTACT_DETECTED = 0x02
FLAG_CONTACT_SUPPORTED = 0x04
FLAG_ENERGY_EXPENDED = 0x08
FLAG_RR_INTERVALS = 0x10

RR_UNITS_PER_SECOND = 1024
# A heart rate a person can have: 0 is what a strap without contact detection sends while
# it has no signal (put on, slipping, taken off), and no heart beats 300 times a minute.
PLAUSIBLE_BPM = range(1, 301)


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    bpm: int
    contact: bool | None  # None: the sensor does not report skin contact
    energy_kj: int | None
    rr_intervals_s: tuple[float, ...]


def parse_heart_rate_measurement(data: bytes) -> HeartRateMeasurement:
    """Decode a 0x2A37 value; ValueError (with the reason) if it is malformed."""
    if len(data) < 2:
        raise ValueError(f"heart rate measurement too short: {len(data)} bytes")
    flags = data[0]
    if flags & FLAG_HR_UINT16:
        if len(data) < 3:
            raise ValueError("flags announce a 16-bit heart rate, payload is shorter")
        bpm, pos = int.from_bytes(data[1:3], "little"), 3
    else:
        bpm, pos = data[1], 2
    contact_bits = (flags >> 1) & 0x03
    contact = None if contact_bits < 2 else contact_bits == 3
    energy = None
    if flags & FLAG_ENERGY_EXPENDED:
        if len(data) < pos + 2:
            raise ValueError("flags announce energy expended, payload is shorter")
        energy, pos = int.from_bytes(data[pos : pos + 2], "little"), pos + 2
    rr: tuple[float, ...] = ()
    if flags & FLAG_RR_INTERVALS:
        raw = data[pos:]
        if len(raw) % 2:
            raise ValueError("RR-intervals must be whole 16-bit values")
        rr = tuple(
            int.from_bytes(raw[i : i + 2], "little") / RR_UNITS_PER_SECOND
            for i in range(0, len(raw), 2)
        )
    return HeartRateMeasurement(bpm=bpm, contact=contact, energy_kj=energy, rr_intervals_s=rr)


def encode_heart_rate_measurement(
    bpm: int,
    *,
    contact: bool | None = None,
    energy_kj: int | None = None,
    rr_intervals_1024: Sequence[int] = (),
    uint16: bool | None = None,
) -> bytes:
    """A 0x2A37 value. ``uint16=None`` picks the 16-bit format only when bpm > 255.

    RR intervals are given in the wire unit (1/1024 s) so that a round trip is exact.
    """
    wide = bpm > 0xFF if uint16 is None else uint16
    if not 0 <= bpm <= (0xFFFF if wide else 0xFF):
        raise ValueError(f"heart rate {bpm} does not fit the {'16' if wide else '8'}-bit format")
    flags = FLAG_HR_UINT16 if wide else 0
    if contact is not None:
        flags |= FLAG_CONTACT_SUPPORTED | (FLAG_CONTACT_DETECTED if contact else 0)
    out = bytearray(bpm.to_bytes(2 if wide else 1, "little"))
    if energy_kj is not None:
        flags |= FLAG_ENERGY_EXPENDED
        out += energy_kj.to_bytes(2, "little")
    if rr_intervals_1024:
        flags |= FLAG_RR_INTERVALS
        for rr in rr_intervals_1024:
            out += rr.to_bytes(2, "little")
    return bytes([flags]) + bytes(out)
