"""AdmissionReview (admission.k8s.io/v1) in and out: strict parsing, the answer.

We never deny: the answer is `allowed: true`, with a JSON Patch when the pod is
narrowed. A body that is not an AdmissionReview is the caller's error (400 with
the reason); the apiserver then applies the webhook's failurePolicy (Ignore).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

API_VERSION = "admission.k8s.io/v1"


class ReviewError(ValueError):
    """Not an AdmissionReview we can answer; the message says why."""


@dataclass(frozen=True, slots=True)
class Review:
    uid: str
    operation: str
    kind: str  # request.kind.kind
    obj: Mapping[str, Any]


def parse_review(body: bytes) -> Review:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ReviewError(f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ReviewError("body is not a JSON object")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "AdmissionReview":
        raise ReviewError(f"expected apiVersion {API_VERSION} and kind AdmissionReview")
    request = doc.get("request")
    if not isinstance(request, dict):
        raise ReviewError("request is missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid is missing or not a string")
    operation = request.get("operation")
    if not isinstance(operation, str):
        raise ReviewError("request.operation is missing or not a string")
    kind = request.get("kind")
    kind_name = kind.get("kind") if isinstance(kind, dict) else None
    if not isinstance(kind_name, str):
        raise ReviewError("request.kind.kind is missing or not a string")
    obj = request.get("object")
    if operation == "CREATE" and not isinstance(obj, dict):
        raise ReviewError("request.object is missing or not an object")
    return Review(uid, operation, kind_name, obj if isinstance(obj, dict) else {})


def answer(uid: str, patch: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(patch)).decode()
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
