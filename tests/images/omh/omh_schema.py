"""Offline Open mHealth validation against the schemas vendored in tests/data/omh.

heart-rate-2.0 is draft-07, the files it references draft-04; each gets the validator of
its own ``$schema``. ``$ref``s name sibling files (``unit-value-1.x.json``), resolved from
the canonical base id through a local registry; ``-1.x`` names map to the files the
repository's symbolic links point to. ``format: date-time`` is enforced with an RFC 3339
check of our own (jsonschema only checks it with an optional extra installed).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

DATA = Path(__file__).resolve().parents[2] / "data" / "omh"
BASE = "https://w3id.org/openmhealth/schemas/omh/"
ALIASES = {
    "header-1.x.json": "header-1.2.json",
    "schema-id-1.x.json": "schema-id-1.1.json",
    "date-time-1.x.json": "date-time-1.0.json",
    "unit-value-1.x.json": "unit-value-1.0.json",
    "duration-unit-value-1.x.json": "duration-unit-value-1.0.json",
    "time-frame-1.x.json": "time-frame-1.0.json",
    "time-interval-1.x.json": "time-interval-1.0.json",
    "part-of-day-1.x.json": "part-of-day-1.0.json",
    "descriptive-statistic-1.x.json": "descriptive-statistic-1.2.json",
    "temporal-relationship-to-physical-activity-1.x.json": "temporal-relationship-to-physical-activity-1.0.json",
    "temporal-relationship-to-sleep-1.x.json": "temporal-relationship-to-sleep-1.0.json",
}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

format_checker = jsonschema.FormatChecker()


@format_checker.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # "type" says what it must be
    if not RFC3339.match(value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))  # real date?
    return True


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / ALIASES.get(name, name)).read_text())
    return doc


def _retrieve(uri: str) -> Resource[Any]:
    if not uri.startswith(BASE):
        raise LookupError(f"not a vendored schema: {uri}")
    return Resource.from_contents(_load(uri.removeprefix(BASE)), default_specification=DRAFT4)


REGISTRY: Registry[Any] = Registry(retrieve=_retrieve)  # type: ignore[call-arg]


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    """A validator for ``heart-rate-2.0.json``, ``data-point-1.0.json``, ..."""
    schema = _load(name)
    id_keyword = "id" if "draft-04" in schema.get("$schema", "") else "$id"
    schema = {**schema, id_keyword: BASE + name}
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=REGISTRY, format_checker=format_checker)


def errors(name: str, doc: Any) -> list[str]:
    return [e.message for e in validator(name).iter_errors(doc)]


def assert_valid_heart_rate_point(point: dict[str, Any]) -> None:
    """The envelope against data-point 1.0 (header 1.2), the body against heart-rate 2.0."""
    assert errors("data-point-1.0.json", point) == []
    assert point["header"]["schema_id"] == {
        "namespace": "omh",
        "name": "heart-rate",
        "version": "2.0",
    }
    assert errors("heart-rate-2.0.json", point["body"]) == []


def samples(kind: str, version: str, outcome: str) -> list[Path]:
    return sorted((DATA / "test-data" / kind / version / outcome).glob("*.json"))
