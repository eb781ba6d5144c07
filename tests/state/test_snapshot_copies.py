"""The hand-written copies on the report path (Sighting.seen_at, DeviceFacts.with_sightings)
equal dataclasses.replace for every field, including a field added later: each field
gets a value unlike its default, so a copy that forgot one would differ."""

from __future__ import annotations

import dataclasses
from typing import Any

from extender.state.snapshot import DeviceFacts, Sighting


def _distinct(cls: type) -> Any:
    values: dict[str, Any] = {}
    for i, f in enumerate(dataclasses.fields(cls)):
        # A value of its own per field, never a default (None, False, 0.0).
        values[f.name] = {"bool": True, "float": 1000.5 + i, "str": f"v{i}"}.get(
            str(f.type).split(" ")[0], f"v{i}"
        )
    return cls(**values)


def test_seen_at_is_replace() -> None:
    s = _distinct(Sighting)
    assert s.reported is True
    got = s.seen_at(12.25)
    assert got == dataclasses.replace(s, last_seen=12.25)
    assert got is not s
    assert s.last_seen != 12.25  # frozen: the original is unchanged


def test_with_sightings_is_replace() -> None:
    d = _distinct(DeviceFacts)
    assert all(getattr(d, f.name) is not None for f in dataclasses.fields(DeviceFacts))
    heard = {"gw": Sighting("gw", -60.0, 5.0, reported=True)}
    got = d.with_sightings(heard)
    assert got == dataclasses.replace(d, sightings=heard)
    assert got.sightings is heard
