"""Heart Rate Measurement (0x2A37): every flag combination, decoded from hand-built bytes."""

from __future__ import annotations

import itertools

import pytest
from omh_consolidator.hrm import (
    HeartRateMeasurement,
    encode_heart_rate_measurement,
    parse_heart_rate_measurement,
)


def u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


RR_SETS = {"no RR": (), "one RR": (1024,), "three RR": (853, 1000, 65535)}
CONTACT = {0: None, 1: None, 2: False, 3: True}  # bits 1-2 -> what the parser reports

CASES = list(itertools.product((False, True), CONTACT, (None, 4660), RR_SETS))


@pytest.mark.parametrize(
    ("wide", "contact_bits", "energy", "rr_name"),
    CASES,
    ids=[
        f"{'u16' if w else 'u8'}-contact{c}-{'energy' if e else 'noenergy'}-{r.replace(' ', '')}"
        for w, c, e, r in CASES
    ],
)
def test_every_flag_combination(
    wide: bool, contact_bits: int, energy: int | None, rr_name: str
) -> None:
    rr = RR_SETS[rr_name]
    bpm = 301 if wide else 187
    flags = (
        int(wide) | contact_bits << 1 | (0x08 if energy is not None else 0) | (0x10 if rr else 0)
    )
    data = bytes([flags]) + (u16(bpm) if wide else bytes([bpm]))
    if energy is not None:
        data += u16(energy)
    data += b"".join(u16(v) for v in rr)

    m = parse_heart_rate_measurement(data)

    assert m == HeartRateMeasurement(
        bpm=bpm,
        contact=CONTACT[contact_bits],
        energy_kj=energy,
        rr_intervals_s=tuple(v / 1024 for v in rr),
    )
    # the encoder writes the same bytes (it spells "not supported" as contact bits 0)
    if contact_bits != 1:
        assert (
            encode_heart_rate_measurement(
                bpm,
                contact=CONTACT[contact_bits],
                energy_kj=energy,
                rr_intervals_1024=rr,
                uint16=wide,
            )
            == data
        )


def test_a_16_bit_value_below_256_is_still_read_as_16_bit() -> None:
    assert parse_heart_rate_measurement(bytes([0x01, 72, 0])).bpm == 72
    assert encode_heart_rate_measurement(72, uint16=True) == bytes([0x01, 72, 0])
    assert encode_heart_rate_measurement(256) == bytes([0x01, 0, 1])  # auto-widened


def test_known_example_from_the_spec_notes() -> None:
    m = parse_heart_rate_measurement(bytes([0x16, 72, 0x00, 0x04]))
    assert (m.bpm, m.contact, m.energy_kj, m.rr_intervals_s) == (72, True, None, (1.0,))


def test_reserved_bits_and_unannounced_trailing_bytes_are_ignored() -> None:
    m = parse_heart_rate_measurement(bytes([0xE0 | 0x06, 88, 0xAA, 0xBB]))
    assert (m.bpm, m.contact, m.energy_kj, m.rr_intervals_s) == (88, True, None, ())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (bytes([0x00]), "too short"),
        (bytes([0x01, 72]), "16-bit"),
        (bytes([0x08, 72, 1]), "energy"),
        (bytes([0x09, 72, 0, 1]), "energy"),
        (bytes([0x10, 72, 1]), "whole 16-bit"),
        (bytes([0x18, 72, 1, 0, 5]), "whole 16-bit"),
    ],
)
def test_malformed_measurements_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_heart_rate_measurement(data)


def test_rr_flag_with_no_interval_yields_none() -> None:
    # allowed by the layout ("one or more" is the norm, but zero bytes parse cleanly)
    assert parse_heart_rate_measurement(bytes([0x10, 60])).rr_intervals_s == ()


@pytest.mark.parametrize(("bpm", "wide"), [(256, False), (-1, None), (65536, True)])
def test_encoder_refuses_values_the_format_cannot_hold(bpm: int, wide: bool | None) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_heart_rate_measurement(bpm, uint16=wide)
